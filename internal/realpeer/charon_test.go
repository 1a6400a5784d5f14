package realpeer

import (
	"fmt"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
)

// ikev1Conn is an IKEv1 transport-mode L2TP connection as a bridge uses
// it (udp/1701 selectors).
func ikev1Conn(local, remote, auth, localID, remoteID, extra string) string {
	return fmt.Sprintf(`connections {
  fg {
    version = 1
    local_addrs = %s
    remote_addrs = %s
    proposals = aes128-sha1-modp2048
    local { auth = %s
      id = %s
      %s }
    remote { auth = %s
      id = %s }
    children {
      l2tp {
        mode = transport
        local_ts = dynamic[udp/1701]
        remote_ts = dynamic[udp/1701]
        esp_proposals = aes128-sha1
      }
    }
  }
}
`, local, remote, auth, localID, extra, auth, remoteID)
}

// TestCharonToCharon: charon as IKEv1 initiator against charon as
// responder, with a PSK and with X.509 certificates from PKI. Both complete
// Main Mode and Quick Mode; installing the ESP SA then fails (no ESP in
// this kernel).
func TestCharonToCharon(t *testing.T) {
	for _, auth := range []string{"psk", "pubkey"} {
		t.Run(auth, func(t *testing.T) {
			p := netns.Pair(t)
			a, b := p.Host("a"), p.Host("b")
			var ca, cb CharonConfig
			idA, idB := a.Addr.String(), b.Addr.String()
			extraA, extraB := "", ""
			if auth == "psk" {
				secrets := fmt.Sprintf("secrets { ike-fg { secret = \"fleetgate realpeer psk\"\n id-a = %s\n id-b = %s } }\n", idA, idB)
				ca.Swanctl, cb.Swanctl = secrets, secrets
			} else {
				pki := NewPKI(t, "realpeer CA")
				certA, certB := pki.Issue(t, "a.fleet.example"), pki.Issue(t, "b.fleet.example")
				ca.Files, cb.Files = pki.CharonFiles("a", certA), pki.CharonFiles("b", certB)
				idA, idB = `"`+certA.DN+`"`, `"`+certB.DN+`"`
				extraA, extraB = "certs = a.pem", "certs = b.pem"
			}
			ca.Swanctl += ikev1Conn(a.Addr.String(), b.Addr.String(), auth, idA, idB, extraA)
			cb.Swanctl += ikev1Conn(b.Addr.String(), a.Addr.String(), auth, idB, idA, extraB)
			resp := StartCharon(t, b, cb)
			init := StartCharon(t, a, ca)
			out, err := init.Initiate(t.Context(), "l2tp", 10*time.Second)
			t.Logf("swanctl --initiate: %v", err)
			log := init.WaitLog(t, 10*time.Second, "IKE_SA fg[1] established", "received netlink error: Protocol not supported")
			want := []string{"selected proposal: ESP:AES_CBC_128/HMAC_SHA1_96", "CHILD_SA l2tp{1} state change: CREATED => INSTALLING"}
			if auth == "pubkey" {
				want = append(want, "authentication of 'O=fleetgate test, CN=b.fleet.example' with ECDSA")
			}
			if !containsAll(log, want) {
				t.Errorf("initiator's log lacks the negotiated CHILD_SA:\n%s\nswanctl:\n%s", log, out)
			}
			resp.WaitLog(t, 5*time.Second, "IKE_SA fg[1] established")
		})
	}
}
