package cli

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/gateway/server"
)

const pkiUsage = `usage:
  gateway pki init   [--dir D] [--cn NAME] [--key ecdsa|rsa] [--days N]
  gateway pki issue  NAME [--dir D] [--kind site|device|gateway] [--san X]... [--key ecdsa|rsa] [--days N]
  gateway pki revoke NAME [--dir D]
  gateway pki crl    [--dir D]
  gateway pki list   [--dir D] [-c FILE] [--expiring 30d]
  gateway pki serve-crl [--dir D] [--listen ADDR] [--resign 24h] [--ocsp-validity 1h]
                     publish the CRL for a fleet's pki.crl_url (GET /crl.pem),
                     re-signed every --resign so it never passes nextUpdate,
                     and answer OCSP for pki.ocsp_url (POST /ocsp, GET /ocsp/B64)
--dir defaults to the pki.dir of -c FILE, else ./pki.`

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func cmdPKI(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stdout, pkiUsage)
		return nil
	}
	sub := args[0]
	fs := flag.NewFlagSet("pki "+sub, flag.ContinueOnError)
	fs.SetOutput(stdout)
	dir := fs.String("dir", "", "PKI directory")
	cfgPath := fs.String("c", "", "gateway configuration (for pki.dir and PSK expiry dates)")
	cn := fs.String("cn", "fleetgate CA", "CA common name (init)")
	key := fs.String("key", pki.KeyECDSA, "key type: ecdsa (P-256) or rsa (2048)")
	days := fs.Int("days", 0, "lifetime in days (default: CA 3650, certificates 825)")
	kind := fs.String("kind", pki.KindSite, "certificate kind: site, device or gateway")
	expiring := fs.String("expiring", "", "list only what expires within this time, e.g. 30d")
	var sans multi
	fs.Var(&sans, "san", "subject alternative name (DNS, IP or email); repeatable")
	// Allow "issue NAME --flags" as well as "issue --flags NAME".
	rest := args[1:]
	var name string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	var cfg *config.Config
	if *cfgPath != "" {
		c, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		cfg = c
		if *dir == "" {
			*dir = c.PKI.Dir
		}
	}
	if *dir == "" {
		*dir = "pki"
	}
	st := &pki.Store{Dir: *dir}
	life := time.Duration(*days) * 24 * time.Hour
	switch sub {
	case "init":
		ca, err := st.CreateCA(pki.CAOptions{CommonName: *cn, KeyType: *key, Lifetime: life})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created CA %q in %s (expires %s)\n", ca.Subject.CommonName, *dir, ca.NotAfter.Format("2006-01-02"))
	case "issue":
		if name == "" {
			return errors.New("pki issue: NAME is required")
		}
		c, err := st.Issue(pki.IssueOptions{Name: name, Kind: *kind, SANs: sans, KeyType: *key, Lifetime: life})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "issued %s certificate %q: %s/certs/%s.crt and .key (expires %s, SANs %s)\n", *kind, name, *dir, name,
			c.NotAfter.Format("2006-01-02"), strings.Join(append(append(c.DNSNames, ipStrings(c)...), c.EmailAddresses...), ","))
	case "revoke":
		if name == "" {
			return errors.New("pki revoke: NAME is required")
		}
		if err := st.Revoke(name); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %q; CRL rewritten at %s/crl.pem (send SIGHUP to the gateway to load it)\n", name, *dir)
	case "crl":
		rl, err := st.WriteCRL()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s/crl.pem: %d revoked, next update %s\n", *dir, len(rl.RevokedCertificateEntries), rl.NextUpdate.Format("2006-01-02"))
	case "list":
		idx, err := st.Index()
		if err != nil && !(errors.Is(err, pki.ErrNoCA) && cfg != nil) {
			return err
		}
		var within time.Duration
		if *expiring != "" {
			if within, err = pki.ParseWithin(*expiring); err != nil {
				return fmt.Errorf("--expiring %q: %w", *expiring, err)
			}
		}
		var psks []pki.Expiry
		if cfg != nil {
			psks = server.PSKExpiries(cfg)
		}
		now := time.Now()
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tTYPE\tKIND\tEXPIRES\tLEFT")
		for _, e := range pki.Expiring(idx, psks, now, within) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, e.Type, e.Kind, e.NotAfter.Format("2006-01-02"), left(e.Left(now)))
		}
		return tw.Flush()
	default:
		return fmt.Errorf("pki: unknown subcommand %q\n%s", sub, pkiUsage)
	}
	return nil
}

func ipStrings(c *x509.Certificate) []string {
	var out []string
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

func left(d time.Duration) string {
	if d < 0 {
		return "EXPIRED"
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
