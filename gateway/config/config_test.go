package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/testenv"
	"github.com/fleetgate/fleetgate/uplink/esp"
)

func TestExampleConfigLoads(t *testing.T) {
	path := testenv.ExampleConfig(t, "gateway.yaml")
	c, err := Load(path)
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	// As checked out (group/world-readable secrets) it is refused, with the fix.
	if _, err := Load("../../configs/gateway.yaml"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		if st, serr := os.Stat("../../configs/secrets/shared.psk"); serr == nil && st.Mode().Perm()&0o077 != 0 {
			t.Errorf("group-readable secrets: got %v, want a refusal naming chmod 600", err)
		}
	}
	if got, want := c.Listen.IKEAddr().Port(), uint16(500); got != want {
		t.Errorf("ike port: got %d, want %d", got, want)
	}
	if got, want := c.PSK.Shared, "example-shared-psk-change-me"; got != want {
		t.Errorf("shared psk from file: got %q, want %q", got, want)
	}
	h := c.Identity("site-hall7")
	if h == nil {
		t.Fatal("identity site-hall7 missing")
	}
	if got, want := h.Addr, netip.MustParseAddr("10.10.0.7"); got != want {
		t.Errorf("static address: got %v, want %v", got, want)
	}
	if got, want := h.RoutePrefixes, []netip.Prefix{netip.MustParsePrefix("10.10.8.0/24")}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("routes: got %v, want %v", got, want)
	}
	if got := c.Identity("pump-station-2").ID; got != "pump-station-2" {
		t.Errorf("cert identity id defaults to name: got %q", got)
	}
	if got := c.Identity("ops-laptop").PushPrefixes; len(got) != 2 {
		t.Errorf("per-identity push routes: got %v, want 2", got)
	}
	if got := h.PushPrefixes; len(got) != 1 || got[0] != netip.MustParsePrefix("10.20.0.0/16") {
		t.Errorf("global push routes fallback: got %v", got)
	}
	pol := c.Policies["sensors"]
	if got, want := pol.Allow[1].PortRanges, [][2]uint16{{5683, 5684}}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("port range: got %v, want %v", got, want)
	}
	if got, want := c.Proposals.ESPParsed[0].Suite, (esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 128}); got != want {
		t.Errorf("esp[0]: got %v, want %v", got, want)
	}
	if got, want := c.PKI.CA, filepath.Join(filepath.Dir(path), "pki", "ca.crt"); got != want {
		t.Errorf("pki ca path: got %q, want %q", got, want)
	}
	if c.DPD.IntervalD != 30*time.Second || c.DPD.TimeoutD != 150*time.Second || c.LCPEcho.IntervalD != 20*time.Second || c.LCPEcho.Failures != 3 {
		t.Errorf("liveness: dpd %v/%v, lcp echo %v x%d", c.DPD.IntervalD, c.DPD.TimeoutD, c.LCPEcho.IntervalD, c.LCPEcho.Failures)
	}
}

func TestLiveness(t *testing.T) {
	c, err := Parse("f.yaml", []byte("dpd: {interval: \"off\"}\nlcp_echo: {interval: 500ms, failures: 5}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DPD.IntervalD >= 0 || c.DPD.TimeoutD != DefaultDPDTimeout || c.LCPEcho.IntervalD != 500*time.Millisecond || c.LCPEcho.Failures != 5 {
		t.Errorf("got dpd %v/%v, lcp echo %v x%d", c.DPD.IntervalD, c.DPD.TimeoutD, c.LCPEcho.IntervalD, c.LCPEcho.Failures)
	}
	d, err := Parse("f.yaml", []byte("{}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d.DPD.IntervalD != DefaultDPDInterval || d.LCPEcho.Failures != DefaultLCPEchoFailures {
		t.Errorf("defaults: dpd %v, lcp echo failures %d", d.DPD.IntervalD, d.LCPEcho.Failures)
	}
	if ch := Diff(d, c); !slices.Contains(ch.RestartNeeded, "dpd") || !slices.Contains(ch.RestartNeeded, "lcp_echo") || len(ch.AllSessions) != 0 {
		t.Errorf("diff: %+v", ch)
	}
}

// TestLimits: defaults come from uplink/ike, values are taken, and a
// change needs a restart.
func TestLimits(t *testing.T) {
	d, err := Parse("f.yaml", []byte("{}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l := d.Limits; l.IKEHalfOpen != 16384 || l.IKENegotiating != 256 || l.IKEHalfOpenTimeoutD != 30*time.Second ||
		l.IKESAsPerSource != 512 || l.IKEQuickModesPerSA != 16 || l.IKEChildrenPerSA != 16 || l.RADIUSInFlight != 256 {
		t.Errorf("defaults: %+v", l)
	}
	c, err := Parse("f.yaml", []byte("limits: {ike_half_open: 100000, ike_half_open_timeout: 20s, ike_sas_per_source: 4}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l := c.Limits; l.IKEHalfOpen != 100000 || l.IKEHalfOpenTimeoutD != 20*time.Second || l.IKESAsPerSource != 4 || l.IKENegotiating != 256 {
		t.Errorf("set: %+v", l)
	}
	if ch := Diff(d, c); !slices.Contains(ch.RestartNeeded, "limits") {
		t.Errorf("diff: %+v", ch)
	}
}

func TestParseErrorsCarryLines(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // substrings, one per expected error, "file:line: msg"
	}{
		{"unknown key", "listen:\n  adress: 1.2.3.4\n", []string{"f.yaml:2: listen: unknown key \"adress\"; did you mean \"address\"?"}},
		{"misspelt section", "psk: {shared: x}\nproposal:\n  ike: [aes256-sha256-modp2048]\n", []string{"f.yaml:2: unknown key \"proposal\"; did you mean \"proposals\"?"}},
		{"wrong type names key and type", "listen:\n  ike_port: five hundred\n  natt_port: [4500]\n", []string{"f.yaml:2: listen.ike_port: expected an integer, got \"five hundred\"", "f.yaml:3: listen.natt_port: expected an integer, got a list"}},
		{"bad yaml", "listen: [\n", []string{"f.yaml:"}},
		{"bad prefix", "psk: {shared: x}\nidentities:\n  - name: a\n    ppp: {password: p}\n    routes: [10.10.8.1/24]\n", []string{"f.yaml:5: \"10.10.8.1/24\" has host bits set"}},
		{"ipv6_prefix", "psk: {shared: x}\nidentities:\n  - name: a\n    ppp: {password: p}\n    ipv6_prefix: 10.10.8.0/24\n  - name: b\n    ppp: {password: p}\n    ipv6_prefix: 2001:db8:8::1/64\n  - name: c\n    ppp: {password: p}\n    ipv6_prefix: 2001:db8::/32\n  - name: d\n    ppp: {password: p}\n    ipv6_prefix: 2001:db8:8::/48\n  - name: e\n    ppp: {password: p}\n    ipv6_prefix: 2001:db8:8:1::/64\n",
			[]string{"f.yaml:5: identity a: ipv6_prefix \"10.10.8.0/24\" is not an IPv6 prefix", "f.yaml:8: identity b: ipv6_prefix \"2001:db8:8::1/64\" has host bits set (did you mean 2001:db8:8::/64?)",
				"f.yaml:11: identity c: ipv6_prefix 2001:db8::/32: want a /48 to /64", "f.yaml:17: identity e: ipv6_prefix 2001:db8:8:1::/64 overlaps 2001:db8:8::/48 of d"}},
		{"undefined policy", "psk: {shared: x}\nidentities:\n  - name: a\n    ppp: {password: p}\n    policy: nope\n", []string{"f.yaml:5: identity a: policy \"nope\" is not defined"}},
		{"duplicate identity and bad port", "psk: {shared: x}\nlisten:\n  ike_port: 70000\nidentities:\n  - name: a\n    ppp: {password: p}\n  - name: a\n    ppp: {user: b, password: p}\n",
			[]string{"f.yaml:3: listen.ike_port 70000 out of range", "f.yaml:7: identity \"a\" defined twice"}},
		{"bad proposal", "proposals:\n  esp: [aes128-sha7]\n", []string{"f.yaml:2: ESP proposal \"aes128-sha7\": unknown integrity"}},
		{"psk missing", "identities:\n  - name: a\n    ppp: {password: p}\n", []string{"f.yaml:2: identity a: auth psk but neither"}},
		{"route overlaps pool", "psk: {shared: x}\nidentities:\n  - name: a\n    ppp: {password: p}\n    routes:\n      - 10.10.0.128/25\n", []string{"f.yaml:6: identity a: framed route 10.10.0.128/25 overlaps the pool"}},
		{"ports without proto", "policies:\n  p:\n    allow:\n      - dst: 10.0.0.0/8\n        ports: [80]\n", []string{"f.yaml:5: policy p: ports need proto tcp or udp"}},
		{"policy dst", "policies:\n  p:\n    allow:\n      - dst: 2001:db8:200::1/48\n      - dst: not-a-prefix\n      - dst: ::ffff:10.0.0.0/104\n",
			[]string{"f.yaml:4: policy p: dst \"2001:db8:200::1/48\" has host bits set (did you mean 2001:db8:200::/48?)",
				"f.yaml:5: policy p: dst \"not-a-prefix\" is not an IPv4 or IPv6 prefix", "f.yaml:6: policy p: dst \"::ffff:10.0.0.0/104\" is not an IPv4 or IPv6 prefix"}},
		{"pool ipv6", "psk: {shared: x}\npool:\n  ipv6_prefix: 2001:db8:100::/64\n  ipv6_max: 3\n", []string{"f.yaml:3: pool.ipv6_prefix 2001:db8:100::/64: want a /32 to /63"}},
		{"pool ipv6 overlap", "psk: {shared: x}\npool: {ipv6_prefix: \"2001:db8:100::/48\", ipv6_max: -1}\n",
			[]string{"f.yaml:2: pool.ipv6_max -1 out of range"}},
		{"pool ipv6 static", "psk: {shared: x}\npool: {ipv6_prefix: \"2001:db8:100::/48\"}\nidentities:\n  - name: a\n    ppp: {password: p}\n    ipv6_prefix: 2001:db8:100::/56\n  - name: b\n    ppp: {password: p}\n    ipv6_prefix: 2001:db8:101:7::/64\n  - name: c\n    ppp: {password: p}\n    ipv6_prefix: 2001:db8:100:107::/64\n",
			[]string{"f.yaml:6: identity a: ipv6_prefix 2001:db8:100::/56 overlaps pool.ipv6_prefix 2001:db8:100::/48"}},
		{"pool ipv6_max alone", "psk: {shared: x}\npool: {ipv6_max: 5}\n", []string{"f.yaml:2: pool.ipv6_max is set but pool.ipv6_prefix is not"}},
		{"dataplane addresses", "psk: {shared: x}\ndataplane:\n  mode: userspace\n  addresses: [\"2001:db8:200::10/128\", \"::ffff:10.0.0.1/128\", nope]\n",
			[]string{"f.yaml:4: dataplane.addresses \"::ffff:10.0.0.1/128\": want an IPv4 or IPv6 address", "f.yaml:4: dataplane.addresses \"nope\""}},
		{"dpd timeout before interval", "psk: {shared: x}\ndpd:\n  interval: 60s\n  timeout: 10s\n", []string{"f.yaml:4: dpd.timeout 10s is shorter than dpd.interval 1m0s"}},
		{"bad dpd interval", "dpd: {interval: soon}\n", []string{`f.yaml:1: dpd.interval "soon": want a duration like 30s, or "off"`}},
		{"bad lcp echo", "lcp_echo:\n  interval: -1s\n  failures: 1000\n", []string{`f.yaml:2: lcp_echo.interval "-1s": want a duration`, "f.yaml:3: lcp_echo.failures 1000 out of range 1..100"}},
		{"bad tun driver", "psk: {shared: x}\ndataplane:\n  tun_driver: tap\n", []string{`f.yaml:3: dataplane.tun_driver "tap": want vnet (default, batched with offloads) or water`}},
		{"bad limits", "psk: {shared: x}\nlimits:\n  ike_half_open: 3\n  ike_half_open_timeout: 1h\n", []string{
			"f.yaml:3: limits.ike_half_open 3 out of range 16..1048576 (default 16384; remove the key to use it)",
			"f.yaml:4: limits.ike_half_open_timeout 1h0m0s out of range 5s..5m"}},
		{"empty", "", []string{"f.yaml: empty configuration"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tt.in))
			if err == nil {
				t.Fatalf("got nil error, want %q", tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("got %T, want config.Errors", err)
			}
			if len(es) != len(tt.want) {
				t.Fatalf("got %d errors (%v), want %d", len(es), err, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(es[i].Error(), w) {
					t.Errorf("error %d: got %q, want it to contain %q", i, es[i].Error(), w)
				}
			}
		})
	}
}

func TestImportSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ipsec.secrets", "# strongSwan\n: PSK \"shared-one\"\nsite-b.example : PSK 0x6b6579\n")
	write("chap-secrets", "# client server secret IP\n\"alice\" * \"pw a\" 10.10.0.50\nbob * bobpw *\n* * ignored\n")
	write("gw.yaml", "import:\n  ipsec_secrets: ipsec.secrets\n  chap_secrets: chap-secrets\nidentities:\n  - name: bob\n    ppp: {user: bob, methods: [chap]}\n")
	c, err := Load(filepath.Join(dir, "gw.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.PSK.Shared, "shared-one"; got != want {
		t.Errorf("shared psk: got %q, want %q", got, want)
	}
	if got, ok := c.PSKFor("site-b.example"); !ok || got != "key" {
		t.Errorf("PSKFor(site-b.example): got %q, want %q", got, "key")
	}
	if got, _ := c.PSKFor("other"); got != "shared-one" {
		t.Errorf("PSKFor(other): got %q, want the shared PSK", got)
	}
	al := c.Identity("alice")
	if al == nil || al.PPP.Password != "pw a" || al.Addr != netip.MustParseAddr("10.10.0.50") {
		t.Errorf("alice: got %+v", al)
	}
	if got := c.Identity("bob").PPP.Password; got != "bobpw" {
		t.Errorf("bob password merged from chap-secrets: got %q, want %q", got, "bobpw")
	}
	if got := c.Identity("bob").PPP.Methods; len(got) != 1 || got[0] != "chap" {
		t.Errorf("bob methods kept from yaml: got %v", got)
	}
	if len(c.Identities) != 2 {
		t.Errorf("got %d identities, want 2 (bob, alice)", len(c.Identities))
	}
}

func TestProposals(t *testing.T) {
	tests := []struct {
		in      string
		want    ESPProposal
		wantErr bool
	}{
		{"aes128gcm16", ESPProposal{Suite: esp.Suite{Cipher: esp.CipherAESGCM16, KeyBits: 128}}, false},
		{"aes256-sha256", ESPProposal{Suite: esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: 256, Integ: esp.IntegHMACSHA256_128}}, false},
		{"aes128-sha1-modp2048", ESPProposal{Suite: esp.Suite{Cipher: esp.CipherAESCBC, KeyBits: 128, Integ: esp.IntegHMACSHA1_96}, PFSGroup: 14}, false},
		{"3des-md5", ESPProposal{Suite: esp.Suite{Cipher: esp.Cipher3DES, KeyBits: 192, Integ: esp.IntegHMACMD5_96}}, false},
		{"aes128", ESPProposal{}, true},
		{"aes192-sha1", ESPProposal{}, true},
		{"chacha20poly1305", ESPProposal{}, true},
	}
	for _, tt := range tests {
		got, err := ParseESPProposal(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseESPProposal(%q) = %+v, %v; want %+v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	ike, err := ParseIKEProposal("aes256-sha256-ecp256")
	if err != nil || ike != (IKEProposal{Cipher: "aes", KeyBits: 256, Hash: "sha256", DHGroup: 19}) {
		t.Errorf("ParseIKEProposal: got %+v, %v", ike, err)
	}
	if _, err := ParseIKEProposal("aes128gcm16-sha256-modp2048"); err == nil {
		t.Error("IKEv1 GCM accepted, want error")
	}
}

func TestDiff(t *testing.T) {
	base := "psk: {shared: s}\npolicies:\n  p: {allow: [{dst: 10.20.0.0/16}]}\nidentities:\n" +
		"  - {name: a, ppp: {password: x}, policy: p}\n" +
		"  - {name: b, ppp: {password: x}, routes: [10.10.8.0/24]}\n" +
		"  - {name: c, ppp: {password: x}}\n"
	old, err := Parse("old.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                    string
		in                      string
		added, removed, changed []string
		all                     bool
	}{
		{"nothing", base, nil, nil, nil, false},
		{"add identity", base + "  - {name: d, ppp: {password: x}}\n", []string{"d"}, nil, nil, false},
		{"policy change affects its users only", strings.Replace(base, "10.20.0.0/16", "10.21.0.0/16", 1), nil, nil, []string{"a"}, false},
		{"route change", strings.Replace(base, "10.10.8.0/24", "10.10.9.0/24", 1), nil, nil, []string{"b"}, false},
		{"remove", strings.Replace(base, "  - {name: c, ppp: {password: x}}\n", "", 1), nil, []string{"c"}, nil, false},
		{"shared psk affects psk identities", strings.Replace(base, "shared: s", "shared: t", 1), nil, nil, []string{"a", "b", "c"}, false},
		{"dns affects all", base + "dns: [10.20.0.53]\n", nil, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := Parse("new.yaml", []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			ch := Diff(old, nc)
			if !eq(ch.Added, tt.added) || !eq(ch.Removed, tt.removed) || !eq(ch.Changed, tt.changed) || (len(ch.AllSessions) > 0) != tt.all {
				t.Errorf("got %+v, want added %v removed %v changed %v all %v", ch, tt.added, tt.removed, tt.changed, tt.all)
			}
			for _, n := range []string{"a", "b", "c"} {
				want := tt.all || contains(tt.removed, n) || contains(tt.changed, n)
				if got := ch.Affects(n); got != want {
					t.Errorf("Affects(%s) = %v, want %v", n, got, want)
				}
			}
		})
	}
}

func eq(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// TestSecretFilePermissions: *_file secrets are read; a secret file, or a
// configuration holding a secret inline, that group or others may read is
// refused by Load with the fix in the message (Parse does not check).
func TestSecretFilePermissions(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("shared.psk", "shared-key\n", 0o600)
	write("d.psk", "own-key\n", 0o600)
	write("d.ppp", "ppp-pw\n", 0o640)
	files := "psk: {shared_file: shared.psk}\nidentities:\n  - {name: d, auth: psk, id: d.example, psk_file: d.psk, ppp: {password_file: d.ppp}}\n"
	cfgPath := write("files.yaml", files, 0o644) // no inline secret: may be readable
	_, err := Load(cfgPath)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+filepath.Join(dir, "d.ppp")) || !strings.Contains(err.Error(), "password_file") {
		t.Fatalf("group-readable password file: got %v", err)
	}
	write("d.ppp", "ppp-pw\n", 0o600)
	c, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if id := c.Identity("d"); id.PSK != "own-key" || id.PPP.Password != "ppp-pw" || c.PSK.Shared != "shared-key" {
		t.Errorf("secrets from files: psk %q, ppp %q, shared %q", id.PSK, id.PPP.Password, c.PSK.Shared)
	}
	inline := write("inline.yaml", "psk: {shared: s}\nidentities:\n  - {name: e, ppp: {password: x}}\n", 0o644)
	if _, err := Load(inline); err == nil || !strings.Contains(err.Error(), "chmod 600 "+inline) {
		t.Fatalf("world-readable config with inline secrets: got %v", err)
	}
	write("inline.yaml", "psk: {shared: s}\nidentities:\n  - {name: e, ppp: {password: x}}\n", 0o600)
	if _, err := Load(inline); err != nil {
		t.Fatal(err)
	}
	// An own key needs an ID; a cert identity takes no key.
	for _, y := range []string{
		"psk: {shared: s}\nidentities:\n  - {name: f, auth: psk, psk: k, ppp: {password: x}}\n",
		"psk: {shared: s}\nidentities:\n  - {name: g, auth: cert, psk: k, ppp: {password: x}}\n",
	} {
		if _, err := Parse("gw.yaml", []byte(y)); err == nil {
			t.Errorf("accepted:\n%s", y)
		}
	}
}
