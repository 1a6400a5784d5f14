package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBGPConfig(t *testing.T) {
	c, err := Parse("f.yaml", []byte(`psk: {shared: x}
bgp:
  local_as: 65010
  router_id: 198.51.100.10
  communities: ["65010:100", no-export]
  neighbors:
    - address: 198.51.100.1
      as: 65000
      password: s3cret
      hold_time: 9s
`))
	if err != nil {
		t.Fatal(err)
	}
	b := c.BGP
	n := b.Neighbors[0]
	if b.NextHopAddr != netip.MustParseAddr("198.51.100.10") || n.Port != 179 || n.HoldTimeD != 9*time.Second || n.ConnectRetryD != 5*time.Second {
		t.Errorf("defaults: next hop %v, port %d, hold %v, retry %v", b.NextHopAddr, n.Port, n.HoldTimeD, n.ConnectRetryD)
	}
	if got, want := b.CommunityValues, []uint32{65010<<16 | 100, 0xFFFFFF01}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("communities: got %x, want %x", got, want)
	}
}

func TestBGPConfigErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"missing", "bgp:\n  communities: [x]\n", []string{
			"f.yaml:2: bgp.local_as is required", "f.yaml:2: bgp.router_id is required",
			`f.yaml:2: bgp.communities "x": want ASN:VALUE`, "f.yaml:2: bgp.neighbors: at least one"}},
		{"neighbour", "bgp:\n  local_as: 1\n  router_id: 192.0.2.1\n  neighbors:\n    - address: 192.0.2.300\n      hold_time: 2s\n      port: 70000\n    - {address: 192.0.2.2, as: 2, connect_retry: 10ms}\n    - {address: 192.0.2.2, as: 3}\n", []string{
			`f.yaml:5: bgp.neighbors.0.address "192.0.2.300" is not an IPv4 address`, "f.yaml:5: bgp.neighbors[0].as is required",
			`f.yaml:6: bgp.neighbors[0].hold_time "2s": want 0s or whole seconds 3s..65535s`, "f.yaml:7: bgp.neighbors[0].port 70000 out of range",
			`f.yaml:8: bgp.neighbors[1].connect_retry "10ms"`, "f.yaml:9: bgp neighbour 192.0.2.2 listed twice"}},
		{"next_hop6", "bgp:\n  local_as: 1\n  router_id: 192.0.2.1\n  next_hop6: fe80::1\n  neighbors: [{address: 192.0.2.2, as: 2}]\n", []string{
			`f.yaml:4: bgp.next_hop6 "fe80::1" is not a global IPv6 address`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte("psk: {shared: x}\n"+tt.in))
			if err == nil {
				t.Fatal("no error")
			}
			got := err.Error()
			for _, w := range tt.want {
				// The test input has one line prepended.
				w = shiftLine(w)
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
		})
	}
}

// shiftLine adds one to the line number of "f.yaml:N: ...".
func shiftLine(s string) string {
	var n int
	rest := strings.TrimPrefix(s, "f.yaml:")
	i := strings.Index(rest, ":")
	for _, c := range rest[:i] {
		n = n*10 + int(c-'0')
	}
	return "f.yaml:" + itoa(n+1) + rest[i:]
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// TestBGPPasswordFile: the MD5 password from a file goes through the
// secret file check; an inline one makes the configuration owner-only.
func TestBGPPasswordFile(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "r1.md5")
	if err := os.WriteFile(pw, []byte("md5-secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "gw.yaml")
	body := "psk: {shared_file: psk}\nbgp:\n  local_as: 1\n  router_id: 192.0.2.1\n  neighbors:\n    - {address: 192.0.2.2, as: 2, password_file: r1.md5}\n"
	for name, b := range map[string]string{"psk": "x", "gw.yaml": body} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Load(cfg); err == nil || !strings.Contains(err.Error(), "bgp.neighbors.0.password_file") {
		t.Errorf("group-readable password file: %v", err)
	}
	if err := os.Chmod(pw, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.BGP.Neighbors[0].Password != "md5-secret" {
		t.Errorf("password %q", c.BGP.Neighbors[0].Password)
	}
	inline := strings.Replace(body, "password_file: r1.md5", "password: inline", 1)
	if err := os.WriteFile(cfg, []byte(inline), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(cfg); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("inline MD5 password in a group-readable file: %v", err)
	}
}
