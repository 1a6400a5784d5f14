package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/pki"
	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/internal/cliutil"
)

// pkiFlags are the flags every pki verb shares.
type pkiFlags struct {
	dir  string
	key  string
	days int
}

// store resolves --dir: the flag, else pki.dir of an explicit -c, else ./pki.
// It returns the loaded configuration when -c was given.
func (f *pkiFlags) store(cmd *cobra.Command, o *opts) (*pki.Store, *config.Config, error) {
	var cfg *config.Config
	if cmd.Flags().Changed("config") {
		c, err := config.Load(o.configPath())
		if err != nil {
			return nil, nil, err
		}
		cfg = c
		if f.dir == "" {
			f.dir = c.PKI.Dir
		}
	}
	if f.dir == "" {
		f.dir = "pki"
	}
	return &pki.Store{Dir: f.dir}, cfg, nil
}

func pkiCmd(ctx context.Context, o *opts) *cobra.Command {
	f := &pkiFlags{}
	p := &cobra.Command{
		Use:   "pki",
		Short: "Certificate authority: init, issue, revoke, crl, list, serve-crl",
		Long: `Certificate authority for gateways, sites and devices.

--dir defaults to the pki.dir of -c FILE, else ./pki. 'gateway pki issue NAME'
writes DIR/certs/NAME.crt and DIR/certs/NAME.key; the gateway's own
certificate is the one pki.cert / pki.key name (pki/certs/gw1.crt in the
shipped configuration).`,
	}
	p.PersistentFlags().StringVar(&f.dir, "dir", "", "PKI directory")
	p.PersistentFlags().StringVar(&f.key, "key", pki.KeyECDSA, "key type: ecdsa (P-256) or rsa (2048)")
	p.PersistentFlags().IntVar(&f.days, "days", 0, "lifetime in days (default: CA 3650, certificates 825)")
	life := func() time.Duration { return time.Duration(f.days) * 24 * time.Hour }

	var cn string
	initC := &cobra.Command{
		Use:   "init",
		Short: "Create the CA (ca.crt, ca.key)",
		Args:  cliutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, _, err := f.store(cmd, o)
			if err != nil {
				return err
			}
			ca, err := st.CreateCA(pki.CAOptions{CommonName: cn, KeyType: f.key, Lifetime: life()})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created CA %q in %s (expires %s)\n", ca.Subject.CommonName, f.dir, ca.NotAfter.Format("2006-01-02"))
			return nil
		},
	}
	initC.Flags().StringVar(&cn, "cn", "fleetgate CA", "CA common name")

	var kind string
	var sans []string
	issue := &cobra.Command{
		Use:   "issue NAME",
		Short: "Issue a certificate and key (DIR/certs/NAME.crt, .key)",
		Args:  cliutil.ExactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, _, err := f.store(cmd, o)
			if err != nil {
				return err
			}
			name := args[0]
			c, err := st.Issue(pki.IssueOptions{Name: name, Kind: kind, SANs: sans, KeyType: f.key, Lifetime: life()})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "issued %s certificate %q: %s/certs/%s.crt and .key (expires %s, SANs %s)\n", kind, name, f.dir, name,
				c.NotAfter.Format("2006-01-02"), strings.Join(append(append(c.DNSNames, ipStrings(c)...), c.EmailAddresses...), ","))
			return nil
		},
	}
	issue.Flags().StringVar(&kind, "kind", pki.KindSite, "certificate kind: site, device or gateway")
	issue.Flags().StringArrayVar(&sans, "san", nil, "subject alternative name (DNS, IP or email); repeatable")

	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a certificate and rewrite the CRL",
		Args:  cliutil.ExactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, _, err := f.store(cmd, o)
			if err != nil {
				return err
			}
			if err := st.Revoke(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %q; CRL rewritten at %s/crl.pem (send SIGHUP to the gateway to load it)\n", args[0], f.dir)
			return nil
		},
	}
	crl := &cobra.Command{
		Use:   "crl",
		Short: "Re-sign and write the CRL (DIR/crl.pem)",
		Args:  cliutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, _, err := f.store(cmd, o)
			if err != nil {
				return err
			}
			rl, err := st.WriteCRL()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s/crl.pem: %d revoked, next update %s\n", f.dir, len(rl.RevokedCertificateEntries), rl.NextUpdate.Format("2006-01-02"))
			return nil
		},
	}
	var expiring string
	list := &cobra.Command{
		Use:   "list",
		Short: "List certificates (and, with -c, PSKs) and their expiry",
		Args:  cliutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, cfg, err := f.store(cmd, o)
			if err != nil {
				return err
			}
			idx, err := st.Index()
			if err != nil && !(errors.Is(err, pki.ErrNoCA) && cfg != nil) {
				return err
			}
			var within time.Duration
			if expiring != "" {
				if within, err = pki.ParseWithin(expiring); err != nil {
					return cliutil.Usagef("--expiring %q: %w", expiring, err)
				}
			}
			var psks []pki.Expiry
			if cfg != nil {
				psks = server.PSKExpiries(cfg)
			}
			now := time.Now()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTYPE\tKIND\tEXPIRES\tLEFT")
			for _, e := range pki.Expiring(idx, psks, now, within) {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, e.Type, e.Kind, e.NotAfter.Format("2006-01-02"), left(e.Left(now)))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&expiring, "expiring", "", "list only what expires within this time, e.g. 30d")

	var listen string
	var resign, validity time.Duration
	serve := &cobra.Command{
		Use:   "serve-crl",
		Short: "Publish the CRL for pki.crl_url (GET /crl.pem, re-signed every --resign) and answer OCSP for pki.ocsp_url (POST /ocsp, GET /ocsp/B64)",
		Args:  cliutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, _, err := f.store(cmd, o)
			if err != nil {
				return err
			}
			return serveCRL(ctx, st, listen, resign, validity, cmd.OutOrStdout())
		},
	}
	serve.Flags().StringVar(&listen, "listen", "127.0.0.1:8089", "HTTP listen address")
	serve.Flags().DurationVar(&resign, "resign", 24*time.Hour, "re-sign the CRL this often (0: never)")
	serve.Flags().DurationVar(&validity, "ocsp-validity", time.Hour, "nextUpdate of OCSP answers (gateways fall back to pki.ocsp_fail once it has passed)")
	p.AddCommand(initC, issue, revoke, crl, list, serve)
	return p
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
