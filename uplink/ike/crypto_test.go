package ike

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"testing"
)

// The vectors below were computed independently with Python's hmac module
// from the RFC 2409 §5, §5.5 and Appendix B formulas (inputs are fixed
// patterns, see kdfInputs).
func kdfInputs() (psk, ni, nr, gxy, ci, cr []byte) {
	ni = make([]byte, 32)
	nr = make([]byte, 32)
	for i := range ni {
		ni[i] = byte(i)
		nr[i] = byte(100 + i)
	}
	return []byte("secret-psk"), ni, nr, bytes.Repeat([]byte{0xab}, 256),
		[]byte{1, 2, 3, 4, 5, 6, 7, 8}, []byte{0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPhase1KDF(t *testing.T) {
	psk, ni, nr, gxy, ci, cr := kdfInputs()
	sk := skeyid(HashSHA256, AuthPSK, psk, ni, nr, gxy)
	k := derivePhase1(HashSHA256, sk, gxy, ci, cr, 32)
	for _, tt := range []struct {
		name      string
		got, want []byte
	}{
		{"SKEYID", k.skeyid, unhex(t, "de03e369f2ff438d9a876f4e6efc6d3f9a9bc5d61a2ebceb24a1bcf8c35f01f6")},
		{"SKEYID_d", k.d, unhex(t, "a00bcf575e8a572a5f06f053ff34e201291908465b4dbc51fd88b27e57e3dfaa")},
		{"SKEYID_a", k.a, unhex(t, "d1762d94130d748c4bdb3ea6cd16242e8040e4733d9afa4f22a99a708fe7a1c1")},
		{"SKEYID_e", k.e, unhex(t, "96ae18f15feb47bf57de7acc13230d7bec68b06332db44f0b27dda915b141cb4")},
		{"enc key (no expansion)", k.enc, unhex(t, "96ae18f15feb47bf57de7acc13230d7bec68b06332db44f0b27dda915b141cb4")},
		{"SKEYID sig", skeyid(HashSHA256, AuthECDSA256, nil, ni, nr, gxy), unhex(t, "c0b77341be98eb106f4785604c72a3d92744567889212a36979ae6d98fe2168f")},
	} {
		if !bytes.Equal(tt.got, tt.want) {
			t.Errorf("%s: got %x, want %x", tt.name, tt.got, tt.want)
		}
	}
	// SHA1 + AES-256 needs Appendix B expansion (20 < 32 bytes).
	sk1 := skeyid(HashSHA1, AuthPSK, psk, ni, nr, gxy)
	k1 := derivePhase1(HashSHA1, sk1, gxy, ci, cr, 32)
	if want := unhex(t, "dd6d5371d5597da43ecef7aea951ea33d0379938"); !bytes.Equal(k1.e, want) {
		t.Errorf("SHA1 SKEYID_e: got %x, want %x", k1.e, want)
	}
	if want := unhex(t, "20deb11f0f6d79ac8e078ffe74a412ce901506792b6747ac21552e19c7fa956b"); !bytes.Equal(k1.enc, want) {
		t.Errorf("expanded key: got %x, want %x", k1.enc, want)
	}
}

func TestKeymat(t *testing.T) {
	_, ni, nr, _, _, _ := kdfInputs()
	d := unhex(t, "a00bcf575e8a572a5f06f053ff34e201291908465b4dbc51fd88b27e57e3dfaa")
	got := keymat(HashSHA256, d, nil, ProtoESP, 0xc0ffee01, ni, nr, 36)
	if want := unhex(t, "918bfebecdc77c0008666eb353a9925d99902e7288ee22830691f0068cef4500d5c7c28c"); !bytes.Equal(got, want) {
		t.Errorf("KEYMAT without PFS: got %x, want %x", got, want)
	}
	got = keymat(HashSHA256, d, bytes.Repeat([]byte{0xcd}, 64), ProtoESP, 0xc0ffee01, ni, nr, 52)
	if want := unhex(t, "679bad21b9dfed3f0c0743c6a3ac1fc848671e9729af6e47db35ef789eee11253f6853a80b66b89aaa97e7b6f3cb1b65243b6ca7"); !bytes.Equal(got, want) {
		t.Errorf("KEYMAT with PFS: got %x, want %x", got, want)
	}
}

func TestDHAgreement(t *testing.T) {
	for _, g := range []Group{GroupMODP1024, GroupMODP2048, GroupMODP3072, GroupMODP4096, GroupECP256, GroupECP384, GroupCurve25519} {
		t.Run(g.String(), func(t *testing.T) {
			a, err := newDH(g, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			b, err := newDH(g, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if len(a.pub) != g.KELen() {
				t.Fatalf("KE length: got %d, want %d", len(a.pub), g.KELen())
			}
			s1, err1 := a.shared(b.pub)
			s2, err2 := b.shared(a.pub)
			if err1 != nil || err2 != nil || !bytes.Equal(s1, s2) {
				t.Fatalf("shared secrets differ: %v %v", err1, err2)
			}
			if _, err := a.shared(make([]byte, g.KELen())); err == nil {
				t.Errorf("all-zero peer value accepted")
			}
			if g.curve() != nil {
				if _, err := a.shared(b.pub[1:]); err == nil {
					t.Errorf("short peer value accepted")
				}
			} else {
				// A MODP value without its leading zero byte (SoftEther
				// strips it) is the same number: same secret.
				z := append([]byte{0}, b.pub[1:]...)
				s3, err3 := a.shared(z[1:])
				s4, err4 := a.shared(z)
				if err3 != nil || err4 != nil || !bytes.Equal(s3, s4) {
					t.Errorf("MODP value without its leading zero: %v %v, secrets equal %v", err3, err4, bytes.Equal(s3, s4))
				}
				if _, err := a.shared(b.pub[:g.KELen()/2-1]); err == nil {
					t.Errorf("MODP value of %d bytes accepted", g.KELen()/2-1)
				}
			}
			if _, err := a.shared(append(b.pub, 0)); err == nil {
				t.Errorf("long peer value accepted")
			}
		})
	}
	for g, bits := range map[Group]int{GroupMODP1024: 1024, GroupMODP2048: 2048, GroupMODP3072: 3072, GroupMODP4096: 4096} {
		if p := modpPrimes[g]; p.BitLen() != bits || !p.ProbablyPrime(2) {
			t.Errorf("%v: prime has %d bits or is not prime", g, p.BitLen())
		}
	}
}

func TestCBCRoundTrip(t *testing.T) {
	for _, c := range []cipherAlg{{encAESCBC, 128}, {encAESCBC, 256}, {enc3DES, 192}} {
		blk, err := c.block(make([]byte, c.keyBits/8))
		if err != nil {
			t.Fatal(err)
		}
		iv := make([]byte, c.blockSize())
		ct := encrypt(blk, iv, []byte("hello ISAKMP"))
		if len(ct)%c.blockSize() != 0 {
			t.Fatalf("ciphertext length %d not a multiple of %d", len(ct), c.blockSize())
		}
		pt, err := decrypt(blk, iv, ct)
		if err != nil || !bytes.HasPrefix(pt, []byte("hello ISAKMP")) {
			t.Fatalf("round trip: got %q, %v", pt, err)
		}
		if _, err := decrypt(blk, iv, ct[:len(ct)-1]); err == nil {
			t.Errorf("ragged ciphertext accepted")
		}
	}
}

func TestProposalStrings(t *testing.T) {
	for _, s := range []string{"aes256-sha256-modp2048", "aes128-sha1-ecp256", "3des-sha1-modp1024", "aes256-sha384-ecp384"} {
		p, err := ParseIKEProposal(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if p.String() != s {
			t.Errorf("round trip: got %q, want %q", p.String(), s)
		}
	}
	for _, s := range []string{"aes128gcm16-ecp256", "aes256gcm16", "aes256-sha256", "aes128-sha1-modp2048", "3des-md5"} {
		p, err := ParseESPProposal(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if p.String() != s {
			t.Errorf("round trip: got %q, want %q", p.String(), s)
		}
	}
	for _, s := range []string{"", "aes256-sha256", "blowfish-sha1-modp2048", "aes256-sha256-modp768", "aes128gcm16-sha1", "aes256", "aes256-sha1-ecp256-x"} {
		_, err1 := ParseIKEProposal(s)
		_, err2 := ParseESPProposal(s)
		if err1 == nil && err2 == nil {
			t.Errorf("%q accepted by both parsers", s)
		}
	}
}
