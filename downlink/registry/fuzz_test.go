package registry

import (
	"bytes"
	"testing"
)

// FuzzParseState checks that ParseState never panics and that whatever it
// accepts survives MarshalState → ParseState unchanged.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"version":1,"prefix":"10.10.8.0/24","endpoints":[{"name":"sensor-17","protocol":"coap","psk_identity":"sensor-17","psk":"MDEyMzQ1Njc4OWFiY2RlZg==","addr":"10.10.8.17"}]}`))
	f.Add([]byte(`{"version":1,"prefix":"10.10.8.0/24","endpoints":[{"name":"s-9","protocol":"mqtt","cert_cn":"s-9","allow":["10.20.0.0/16","*"],"addr":"10.10.8.9"}]}`))
	f.Add([]byte(`{"version":1,"prefix":"10.10.8.0/30","endpoints":[]}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseState(b)
		if err != nil {
			return
		}
		out, err := MarshalState(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := ParseState(out)
		if err != nil {
			t.Fatalf("re-parse of marshalled state failed: %v\n%s", err, out)
		}
		out2, _ := MarshalState(s2)
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip differs:\n%s\n%s", out, out2)
		}
	})
}
