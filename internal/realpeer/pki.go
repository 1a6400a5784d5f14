package realpeer

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/internal/testenv"
)

// PKI is a throwaway certificate authority made with strongSwan's pki
// tool (ECDSA P-256), for charon and for our own code.
type PKI struct {
	// Dir holds ca.key and ca.pem.
	Dir string
	// CAPEM is the CA certificate in PEM.
	CAPEM []byte
	// DN is the CA's distinguished name.
	DN  string
	bin string
}

// Cert is one certificate issued by a PKI.
type Cert struct {
	// CertPEM and KeyPEM are the certificate and its private key ("EC
	// PRIVATE KEY") in PEM.
	CertPEM, KeyPEM []byte
	// DN is the subject, as charon prints and matches it
	// ("O=fleetgate test, CN=name").
	DN string
}

// NewPKI creates a CA named "O=fleetgate test, CN=<name>".
func NewPKI(t testing.TB, name string) *PKI {
	t.Helper()
	p := &PKI{Dir: privateDir(t, "pki"), bin: testenv.RequireBinary(t, "pki"), DN: "O=fleetgate test, CN=" + name}
	key := p.run(t, nil, "--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem")
	writeFile(t, filepath.Join(p.Dir, "ca.key"), key)
	p.CAPEM = p.run(t, nil, "--self", "--ca", "--lifetime", "30", "--in", filepath.Join(p.Dir, "ca.key"),
		"--type", "ecdsa", "--dn", p.DN, "--outform", "pem")
	writeFile(t, filepath.Join(p.Dir, "ca.pem"), p.CAPEM)
	return p
}

func (p *PKI) run(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(p.bin, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("realpeer: pki %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// Issue makes an end-entity certificate "O=fleetgate test, CN=cn" with
// the given subjectAltNames (DNS names, IP addresses or emails; pki infers
// the type).
func (p *PKI) Issue(t testing.TB, cn string, sans ...string) Cert {
	t.Helper()
	c := Cert{DN: "O=fleetgate test, CN=" + cn}
	c.KeyPEM = p.run(t, nil, "--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem")
	pub := p.run(t, c.KeyPEM, "--pub", "--type", "ecdsa")
	args := []string{"--issue", "--lifetime", "30", "--cacert", filepath.Join(p.Dir, "ca.pem"),
		"--cakey", filepath.Join(p.Dir, "ca.key"), "--dn", c.DN, "--outform", "pem", "--flag", "serverAuth", "--flag", "clientAuth"}
	for _, s := range sans {
		args = append(args, "--san", s)
	}
	c.CertPEM = p.run(t, pub, args...)
	return c
}

// CharonFiles returns the swanctl directory entries (CharonConfig.Files)
// for a charon using c under the name name: its certificate, key and this
// CA.
func (p *PKI) CharonFiles(name string, c Cert) map[string][]byte {
	return map[string][]byte{
		"x509ca/ca.pem":          p.CAPEM,
		"x509/" + name + ".pem":  c.CertPEM,
		"ecdsa/" + name + ".key": c.KeyPEM,
	}
}

// WriteFiles writes the certificate and key as name.pem and name.key in
// dir and returns their paths.
func (c Cert) WriteFiles(t testing.TB, dir, name string) (certPath, keyPath string) {
	t.Helper()
	certPath, keyPath = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	writeFile(t, certPath, c.CertPEM)
	writeFile(t, keyPath, c.KeyPEM)
	return certPath, keyPath
}
