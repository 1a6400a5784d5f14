package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetgate/fleetgate/gateway/pki"
)

// cmdServeCRL publishes the CA's CRL over HTTP for the gateways' pki.crl_url:
// GET /crl.pem returns dir/crl.pem as it is on disk (so `gateway pki
// revoke` takes effect at the next fetch); the CRL is re-signed every
// --resign so it never expires while the CA host runs. It is also the
// fleet's OCSP responder for pki.ocsp_url: POST /ocsp (or GET
// /ocsp/BASE64), answers signed by the CA, valid --ocsp-validity, status
// read from the index at each request.
func cmdServeCRL(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pki serve-crl", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dir := fs.String("dir", "pki", "PKI directory")
	listen := fs.String("listen", "127.0.0.1:8089", "HTTP listen address")
	resign := fs.Duration("resign", 24*time.Hour, "re-sign the CRL this often (0: never)")
	validity := fs.Duration("ocsp-validity", time.Hour, "nextUpdate of OCSP answers (gateways fall back to pki.ocsp_fail once it has passed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st := &pki.Store{Dir: *dir}
	if _, _, err := st.CA(); err != nil {
		return err
	}
	if _, err := st.WriteCRL(); err != nil {
		return err
	}
	path := filepath.Join(*dir, "crl.pem")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /crl.pem", func(w http.ResponseWriter, _ *http.Request) {
		b, err := os.ReadFile(path)
		if err != nil {
			http.Error(w, "no CRL", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		_, _ = w.Write(b)
	})
	responder := &pki.OCSPResponder{Store: st, Validity: *validity}
	mux.Handle("POST /ocsp", responder)
	mux.Handle("GET /ocsp/", responder)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("pki serve-crl: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(stdout, "serving %s at http://%s/crl.pem\n", path, ln.Addr())
	fmt.Fprintf(stdout, "OCSP responder at http://%s/ocsp\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var tick <-chan time.Time
	if *resign > 0 {
		t := time.NewTicker(*resign)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			_ = srv.Close()
			<-errc
			return nil
		case err := <-errc:
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return err
		case <-tick:
			if _, err := st.WriteCRL(); err != nil {
				fmt.Fprintf(stdout, "re-signing the CRL failed: %v\n", err)
			}
		}
	}
}
