package clientconfig

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/internal/netns"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// TestSwanctlLoadsOurConfig starts a private charon (realpeer: own network
// namespace, private /run, own strongswan.conf and vici socket) and loads
// the swanctl.conf we print with the real swanctl.
func TestSwanctlLoadsOurConfig(t *testing.T) {
	ch := realpeer.StartCharon(t, netns.One(t), realpeer.CharonConfig{})
	dir := t.TempDir()
	c := load(t)
	st := &pki.Store{Dir: filepath.Join(dir, "pki")}
	if _, err := st.CreateCA(pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Issue(pki.IssueOptions{Name: "site-hall7", SANs: []string{"site-hall7.sites.example.net"}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		identity string
		want     []string
	}{
		{"ops-laptop", []string{"loaded ike secret 'ike-fleetgate'", "loaded connection 'fleetgate'", "successfully loaded 1 connections, 0 unloaded"}},
		{"site-hall7", []string{"loaded certificate from", "site-hall7.crt", "loaded private key from", "site-hall7.key", "loaded connection 'fleetgate'", "successfully loaded 1 connections"}},
	}
	for _, tt := range tests {
		p, err := FromConfig(c, tt.identity, "192.0.2.10")
		if err != nil {
			t.Fatal(err)
		}
		out, err := Render(FormatStrongSwan, p)
		if err != nil {
			t.Fatal(err)
		}
		body := section(out, "/etc/swanctl/conf.d/fleetgate.conf")
		if !strings.Contains(body, "connections {") {
			t.Fatalf("no swanctl section in:\n%s", out)
		}
		// Credentials go to charon's swanctl directories, the
		// configuration to a file of its own per identity.
		swdir := ch.Dir
		files := map[string]string{"swanctl-" + tt.identity + ".conf": body}
		if p.Identity.Auth == config.AuthCert {
			files["x509ca/ca.crt"] = filepath.Join(st.Dir, "ca.crt")
			files["x509/site-hall7.crt"] = filepath.Join(st.Dir, "certs", "site-hall7.crt")
			files["private/site-hall7.key"] = filepath.Join(st.Dir, "certs", "site-hall7.key")
		}
		for name, content := range files {
			if !strings.HasSuffix(name, ".conf") {
				b, err := os.ReadFile(content)
				if err != nil {
					t.Fatal(err)
				}
				content = string(b)
			}
			path := filepath.Join(swdir, name)
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		res, err := ch.Swanctl(context.Background(), "--load-all", "--noprompt", "--file", filepath.Join(swdir, "swanctl-"+tt.identity+".conf"))
		if err != nil {
			t.Fatalf("%s: swanctl --load-all: %v\n%s", tt.identity, err, res)
		}
		for _, want := range tt.want {
			if !strings.Contains(res, want) {
				t.Errorf("%s: swanctl output lacks %q:\n%s", tt.identity, want, res)
			}
		}
		conns, err := ch.Swanctl(context.Background(), "--list-conns")
		if err != nil {
			t.Fatalf("swanctl --list-conns: %v\n%s", err, conns)
		}
		for _, want := range []string{"fleetgate: IKEv1", "remote: 192.0.2.10", "fleetgate-l2tp: TRANSPORT", "local:  dynamic[udp/l2f]", "remote: dynamic[udp/l2f]"} {
			if !strings.Contains(conns, want) {
				t.Errorf("%s: --list-conns lacks %q:\n%s", tt.identity, want, conns)
			}
		}
		if p.Identity.Auth == config.AuthCert && !strings.Contains(conns, "id: site-hall7.sites.example.net") {
			t.Errorf("cert identity not used as local id:\n%s", conns)
		}
		if p.Identity.Auth == config.AuthCert {
			// charon holds the certificate with its ECDSA private key.
			certs, err := ch.Swanctl(context.Background(), "--list-certs", "--type", "x509")
			if err != nil || !strings.Contains(certs, "ECDSA 256 bits, has private key") {
				t.Errorf("--list-certs: want the ECDSA key loaded (err %v):\n%s", err, certs)
			}
		}
	}
}
