package peerid

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClassifyRows: one case per row of Rows, plus the NAT-T/DPD-only
// vendor IDs every stack sends (unknown on their own), and precedence.
func TestClassifyRows(t *testing.T) {
	natt := mustHex(t, "4a131c81070358455c5728f20e95452f") // RFC 3947
	dpd := mustHex(t, "afcad71368a1f1c96b8696fc77570100")
	cases := []struct {
		name string
		o    Observations
		want Kind
	}{
		{"nothing", Observations{}, Unknown},
		{"nat-t and dpd only", Observations{VendorIDs: [][]byte{natt, dpd}}, Unknown},
		{"fleetgate bridge", Observations{L2TPVendor: "fleetgate-bridge", L2TPHost: "site1"}, FleetgateBridge},
		// Windows 10's VID as charon logs it: MS NT5 ISAKMPOAKLEY v9.
		{"windows vid", Observations{VendorIDs: [][]byte{natt, mustHex(t, "1e2b516905991c7d7c96fcbfb587e46100000009")}}, Windows},
		{"windows l2tp", Observations{L2TPVendor: "Microsoft", L2TPHost: "DESKTOP-1"}, Windows},
		{"android", Observations{L2TPHost: "android-l2tp"}, Android},
		{"apple", Observations{L2TPVendor: "Apple Computer, Inc."}, Apple},
		{"softether", Observations{L2TPVendor: "SoftEther Corporation"}, SoftEther},
		{"mikrotik", Observations{L2TPVendor: "MikroTik", L2TPHost: "MikroTik"}, MikroTik},
		{"strongswan vid", Observations{VendorIDs: [][]byte{natt, mustHex(t, "882fe56d6fd20dbc2251613b2ebe5beb")}}, StrongSwan},
		{"strongswan + xl2tpd", Observations{VendorIDs: [][]byte{VIDStrongSwan}, L2TPVendor: "xelerance.com"}, StrongSwan},
		{"libreswan vid", Observations{VendorIDs: [][]byte{append([]byte("OE"), bytes.Repeat([]byte{7}, 10)...)}}, Libreswan},
		{"OE prefix, wrong length", Observations{VendorIDs: [][]byte{[]byte("OEnope")}}, Unknown},
		{"xl2tpd", Observations{L2TPVendor: "xelerance.com", L2TPHost: "site1"}, XL2TPD},
		{"xl2tpd case", Observations{L2TPVendor: "Xelerance.COM"}, XL2TPD},
		{"host name alone is not a vendor", Observations{L2TPHost: "xelerance.com"}, Unknown},
	}
	for _, c := range cases {
		if got := Classify(c.o); got != c.want {
			t.Errorf("%s: Classify = %q, want %q", c.name, got, c.want)
		}
	}
	if hex.EncodeToString(VIDStrongSwan) != "882fe56d6fd20dbc2251613b2ebe5beb" || hex.EncodeToString(VIDMSNT5) != "1e2b516905991c7d7c96fcbfb587e461" {
		t.Fatalf("vendor ID derivation changed: %x %x", VIDStrongSwan, VIDMSNT5)
	}
}

// TestRowsBoundedAndSourced: every row returns a Kind of the bounded set,
// names its evidence, and every Kind but Unknown has a row.
func TestRowsBoundedAndSourced(t *testing.T) {
	seen := map[Kind]bool{}
	for _, r := range Rows {
		if !Valid(r.Kind) || r.Kind == Unknown {
			t.Errorf("row kind %q not in Kinds", r.Kind)
		}
		if (r.Evidence != Verified && r.Evidence != FromDocumentation) || r.Source == "" {
			t.Errorf("row %s: evidence %q, source %q", r.Kind, r.Evidence, r.Source)
		}
		seen[r.Kind] = true
	}
	for _, k := range Kinds {
		if k != Unknown && !seen[k] {
			t.Errorf("kind %s has no row", k)
		}
	}
}

// TestVerifiedRowsHaveTests: a Verified row names a test that exists.
func TestVerifiedRowsHaveTests(t *testing.T) {
	for _, r := range Rows {
		if r.Evidence == Verified {
			f := strings.Fields(r.Source)
			checkTest(t, f[0]+" "+f[1])
		}
	}
}

// TestQuirksTable: one check per quirk: it names peers of the bounded set,
// its code and its test exist, and Applies follows the table.
func TestQuirksTable(t *testing.T) {
	names := map[string]bool{}
	for i := range Quirks {
		q := &Quirks[i]
		t.Run(q.Name, func(t *testing.T) {
			if names[q.Name] || q.Name == "" || q.Behaviour == "" || len(q.Peers) == 0 {
				t.Fatalf("quirk %+v: duplicate or incomplete", q)
			}
			names[q.Name] = true
			for _, p := range q.Peers {
				if !Valid(p) || !q.Applies(p) {
					t.Errorf("peer %q: valid %v, applies %v", p, Valid(p), q.Applies(p))
				}
			}
			if q.Applies(Unknown) != q.AllPeers {
				t.Errorf("Applies(unknown) = %v with AllPeers %v", q.Applies(Unknown), q.AllPeers)
			}
			where := filepath.Join("..", "..", strings.Fields(q.Where)[0])
			if _, err := os.Stat(where); err != nil {
				t.Errorf("where: %v", err)
			}
			checkTest(t, q.Test)
		})
	}
}

// checkTest fails unless "dir TestName" names a test function in dir.
func checkTest(t *testing.T, spec string) {
	t.Helper()
	f := strings.Fields(spec)
	if len(f) != 2 {
		t.Fatalf("test spec %q: want \"dir TestName\"", spec)
	}
	dir := filepath.Join("..", "..", f[0])
	files, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
	re := regexp.MustCompile(`(?m)^func ` + regexp.QuoteMeta(f[1]) + `\(t \*testing\.T\)`)
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err == nil && re.Match(b) {
			return
		}
	}
	t.Errorf("no func %s in %s", f[1], dir)
}

func TestKeepBounds(t *testing.T) {
	var vs [][]byte
	long := bytes.Repeat([]byte{1}, 1000)
	for i := 0; i < 100; i++ {
		vs = KeepVendorID(vs, long)
	}
	if len(vs) != MaxVendorIDs || len(vs[0]) != MaxVendorIDLen {
		t.Fatalf("kept %d vendor IDs of %d bytes", len(vs), len(vs[0]))
	}
	long[0] = 9
	if vs[0][0] != 1 {
		t.Fatal("KeepVendorID keeps a reference to the peer's buffer")
	}
	if n := len(KeepName(strings.Repeat("x", 1000))); n != MaxNameLen {
		t.Fatalf("KeepName kept %d bytes", n)
	}
}

// TestIKEKindMerged: the IKE layer's verdict (FromVendorIDs) combines
// with the L2TP AVPs by row order.
func TestIKEKindMerged(t *testing.T) {
	ike := FromVendorIDs([][]byte{VIDStrongSwan})
	if ike != StrongSwan || FromVendorIDs(nil) != Unknown {
		t.Fatalf("FromVendorIDs: %q", ike)
	}
	if k := Classify(Observations{IKE: ike, L2TPVendor: "xelerance.com"}); k != StrongSwan {
		t.Fatalf("strongSwan VID + xl2tpd: %q", k)
	}
	if k := Classify(Observations{IKE: Unknown, L2TPVendor: "xelerance.com"}); k != XL2TPD {
		t.Fatalf("no VID + xl2tpd: %q", k)
	}
	if k := Classify(Observations{IKE: Windows, L2TPVendor: "fleetgate-bridge"}); k != FleetgateBridge {
		t.Fatalf("bridge AVP first: %q", k)
	}
}

func TestCounts(t *testing.T) {
	if len(Counts{}) != len(Kinds) || Kinds[len(Kinds)-1] != Unknown {
		t.Fatalf("Counts has %d slots for %d kinds (Unknown last)", len(Counts{}), len(Kinds))
	}
	var c Counts
	c.Add(XL2TPD)
	c.Add("no-such-kind")
	if c.Load(XL2TPD) != 1 || c.Load(Unknown) != 1 || c.Load(Windows) != 0 {
		t.Fatalf("counts: xl2tpd %d unknown %d windows %d", c.Load(XL2TPD), c.Load(Unknown), c.Load(Windows))
	}
}
