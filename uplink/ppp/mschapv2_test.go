package ppp

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func h(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(strings.Join(strings.Fields(s), ""), "0x", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 2759 §9.2 known-answer test.
func TestMSCHAPv2KAT(t *testing.T) {
	const user, pass = "User", "clientPass"
	auth := h(t, "5B 5D 7C 7D 7B 3F 2F 3E 3C 2C 60 21 32 26 26 28")
	peer := h(t, "21 40 23 24 25 5E 26 2A 28 29 5F 2B 3A 33 7C 7E")
	if got, want := challengeHash(peer, auth, user), h(t, "D0 2E 43 86 BC E9 12 26"); !bytes.Equal(got, want) {
		t.Errorf("ChallengeHash: got %X, want %X", got, want)
	}
	pwHash := ntPasswordHash(pass)
	if want := h(t, "44 EB BA 8D 53 12 B8 D6 11 47 44 11 F5 69 89 AE"); !bytes.Equal(pwHash, want) {
		t.Errorf("NtPasswordHash: got %X, want %X", pwHash, want)
	}
	nt := MSCHAPv2NTResponse(auth, peer, user, pass)
	if want := h(t, "82 30 9E CD 8D 70 8B 5E A0 8F AA 39 81 CD 83 54 42 33 11 4A 3D 85 D6 DF"); !bytes.Equal(nt, want) {
		t.Errorf("NT-Response: got %X, want %X", nt, want)
	}
	const wantAuth = "S=407A5589115FD0D6209F510FE9C04566932CDA56"
	if got := MSCHAPv2AuthenticatorResponse(pwHash, nt, peer, auth, user); got != wantAuth {
		t.Errorf("AuthenticatorResponse: got %s, want %s", got, wantAuth)
	}
	if got, ok := MSCHAPv2Verify(pwHash, auth, peer, nt, `DOMAIN\User`); !ok || got != wantAuth {
		t.Errorf("Verify with domain: got %q %v", got, ok)
	}
	nt[0] ^= 1
	if _, ok := MSCHAPv2Verify(pwHash, auth, peer, nt, user); ok {
		t.Error("Verify accepted a corrupted NT-Response")
	}
}

func TestCHAPMD5(t *testing.T) {
	// MD5(0x01 || "secret" || 00..0f), computed independently with Python's hashlib.
	got := CHAPMD5Response(1, []byte("secret"), h(t, "000102030405060708090a0b0c0d0e0f"))
	if want := h(t, "740e86463bda3a4d7017d6e0fba0699d"); !bytes.Equal(got, want) {
		t.Fatalf("got %x, want %x", got, want)
	}
	if bytes.Equal(got, CHAPMD5Response(2, []byte("secret"), h(t, "000102030405060708090a0b0c0d0e0f"))) {
		t.Fatal("identifier not part of the hash")
	}
}
