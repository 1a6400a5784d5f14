package creds

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const sample = `# fleetgate credentials v1
sensor-1  psk  id-1  hex:00112233445566778899aabbccddeeff

sensor-2	mqtt	user-2	text:pw-2
sensor-3 cert sensor-3 c/3.pem c/3.key
`

func TestParse(t *testing.T) {
	s, err := Parse(strings.NewReader(sample), "/etc/fg")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(s.Names(), ","), "sensor-1,sensor-2,sensor-3"; got != want {
		t.Errorf("names: got %s, want %s", got, want)
	}
	k, err := s.PSK([]byte("id-1"))
	if err != nil || len(k) != 16 || k[15] != 0xff {
		t.Errorf("PSK(id-1): got %x, %v", k, err)
	}
	e, _ := s.Get("sensor-2")
	if string(e.Secret) != "pw-2" || e.Identity != "user-2" {
		t.Errorf("sensor-2: got %q/%q, want user-2/pw-2", e.Identity, e.Secret)
	}
	e, _ = s.Get("sensor-3")
	if e.CertFile != "/etc/fg/c/3.pem" || e.KeyFile != "/etc/fg/c/3.key" {
		t.Errorf("sensor-3 paths: got %s %s", e.CertFile, e.KeyFile)
	}
	if _, err := s.PSK([]byte("nobody")); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown identity: got %v, want ErrNotFound", err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, line string
		want           error
	}{
		{"few fields", "a psk b\n", "line 1", ErrSyntax},
		{"bad kind", "# c\na rsa b text:x\n", "line 2", ErrSyntax},
		{"no prefix", "a psk b secret\n", "line 1", ErrSyntax},
		{"bad hex", "a psk b hex:zz\n", "line 1", ErrSyntax},
		{"dup name", "a psk b text:x\na mqtt c text:y\n", "line 2", ErrDuplicate},
		{"dup identity", "a psk b text:x\nc psk b text:y\n", "line 2", ErrDuplicate},
		{"cert missing key", "a cert a a.pem\n", "line 1", ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.in), "")
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.line) {
				t.Errorf("got %v, want %v at %s", err, tt.want, tt.line)
			}
		})
	}
}

func TestWriteParseRoundTrip(t *testing.T) {
	s, err := Generate("seed", KindPSK, []string{"sensor-1", "sensor-2"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := Parse(&buf, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range s.Names() {
		a, _ := s.Get(n)
		b, _ := back.Get(n)
		if !bytes.Equal(a.Secret, b.Secret) {
			t.Errorf("%s: secret changed in round trip", n)
		}
	}
	if bytes.Equal(DerivePSK("seed", "sensor-1"), DerivePSK("seed", "sensor-2")) {
		t.Error("two devices derived the same PSK")
	}
}

func TestCAIssue(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.Issue("sensor-9", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leaf.Verify(x509VerifyOpts(ca)); err != nil {
		t.Errorf("issued cert does not verify against the CA: %v", err)
	}
	if _, _, err := PEM(c); err != nil {
		t.Error(err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("a psk b hex:00\n"))
	f.Add([]byte("a cert a a.pem a.key\n# x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(bytes.NewReader(b), "")
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := s.Write(&buf); err != nil {
			t.Fatal(err)
		}
		back, err := Parse(&buf, "")
		if err != nil {
			t.Fatalf("re-parse of written set failed: %v\n%s", err, buf.String())
		}
		if back.Len() != s.Len() {
			t.Fatalf("got %d entries after round trip, want %d", back.Len(), s.Len())
		}
	})
}
