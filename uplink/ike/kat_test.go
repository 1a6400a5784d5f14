package ike

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// readKAT reads "name: hex" lines.
func readKAT(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") || !strings.Contains(l, ": ") {
			continue
		}
		k, v, _ := strings.Cut(l, ": ")
		b, err := hex.DecodeString(strings.TrimSpace(v))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		out[k] = b
	}
	return out
}

// TestKATFromCharon checks our RFC 2409 derivations against key material
// a real strongSwan logged during an exchange with us.
func TestKATFromCharon(t *testing.T) {
	k := readKAT(t, "testdata/charon-psk-sha256-modp2048.kat")
	gxy, sk := k["shared Diffie Hellman secret"], k["SKEYID"]
	if len(gxy) != 256 || len(sk) != 32 {
		t.Fatalf("bad KAT file: g^xy %d bytes, SKEYID %d bytes", len(gxy), len(sk))
	}
	keys := derivePhase1(HashSHA256, sk, gxy, k["icookie"], k["rcookie"], 32)
	for _, c := range []struct {
		name string
		got  []byte
	}{{"SKEYID_d", keys.d}, {"SKEYID_a", keys.a}, {"SKEYID_e", keys.e}, {"encryption key Ka", keys.enc}} {
		if !bytes.Equal(c.got, k[c.name]) {
			t.Errorf("%s: got %x, want %x", c.name, c.got, k[c.name])
		}
	}
	for _, dir := range []string{"initiator", "responder"} {
		seed := k[dir+" SA seed"] // protocol | SPI | Ni_b | Nr_b
		if len(seed) != 69 {
			t.Fatalf("%s seed: %d bytes", dir, len(seed))
		}
		got := keymat(HashSHA256, keys.d, nil, seed[0], binary.BigEndian.Uint32(seed[1:5]), seed[5:37], seed[37:], 20)
		if want := k["encryption "+dir+" key"]; !bytes.Equal(got, want) {
			t.Errorf("%s KEYMAT: got %x, want %x", dir, got, want)
		}
	}
}

// TestInteropKeymatMatchesCharon compares, live, the phase 1 key and both
// ESP KEYMATs we derive with the ones charon logs.
func TestInteropKeymatMatchesCharon(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "charon")
	charonLogLevel = 4
	t.Cleanup(func() { charonLogLevel = 2 })
	for _, tc := range interopCases[:3] {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNetnsPair(t)
			conf, files, set := interopSetup(t, tc, false)
			ch := startCharon(t, ns.peer, conf, files)
			var mu sync.Mutex
			var ka []byte
			e, events := interopEngine(t, ns.ours, func(c *Config) {
				set(c)
				c.OnKeys = func(_, _ [8]byte, key []byte) { mu.Lock(); ka = key; mu.Unlock() }
			})
			if err := e.Dial(netip.MustParseAddrPort(ourAddr+":500"), netip.MustParseAddrPort(charonAddr+":500")); err != nil {
				t.Fatal(err)
			}
			c := nextEvent(t, events, EventChildUp).Child
			log := ch.waitLog(t, "unable to install")
			mu.Lock()
			defer mu.Unlock()
			if want := dumpAfter(log, "] encryption key Ka => "); len(want) == 0 || !bytes.Equal(ka, want) {
				t.Errorf("phase 1 key: ours %x, charon's %x", ka, want)
			}
			// charon is the responder: its "initiator key" protects our
			// outbound traffic. Its dump holds the encryption part only.
			n := c.Suite.EncKeyLen()
			if want := dumpAfter(log, "] encryption initiator key => "); !bytes.Equal(c.OutKey[:n], want) {
				t.Errorf("outbound KEYMAT: ours %x, charon's %x", c.OutKey[:n], want)
			}
			if want := dumpAfter(log, "] encryption responder key => "); !bytes.Equal(c.InKey[:n], want) {
				t.Errorf("inbound KEYMAT: ours %x, charon's %x", c.InKey[:n], want)
			}
			if c.Suite.AuthKeyLen() > 0 {
				if want := dumpAfter(log, "] integrity initiator key => "); !bytes.Equal(c.OutKey[n:], want) {
					t.Errorf("outbound integrity KEYMAT: ours %x, charon's %x", c.OutKey[n:], want)
				}
			}
		})
	}
}

// dumpAfter extracts the hex dump following a charon "name => n bytes" line.
func dumpAfter(log, marker string) []byte {
	i := strings.Index(log, marker)
	if i < 0 {
		return nil
	}
	var b []byte
	lines := strings.Split(log[i:], "\n")
	for _, l := range lines[1:] {
		// "[hh:mm:ss] 06[IKE]   16: 74 4E ..." — find the offset field.
		f := strings.Fields(l)
		j := 0
		for j < len(f) && !(strings.HasSuffix(f[j], ":") && isDecimal(strings.TrimSuffix(f[j], ":"))) {
			j++
		}
		if j >= len(f)-1 || j > 2 {
			break
		}
		for _, h := range f[j+1:] {
			v, err := hex.DecodeString(h)
			if len(h) != 2 || err != nil {
				break
			}
			b = append(b, v...)
		}
	}
	return b
}

func isDecimal(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
