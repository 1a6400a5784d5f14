package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetgate/fleetgate/gateway/pki"
)

// serveCRL publishes the CA's CRL over HTTP for the gateways' pki.crl_url:
// GET /crl.pem returns dir/crl.pem as it is on disk (so `gateway pki
// revoke` takes effect at the next fetch); the CRL is re-signed every
// --resign so it never expires while the CA host runs. It is also the
// fleet's OCSP responder for pki.ocsp_url: POST /ocsp (or GET
// /ocsp/BASE64), answers signed by the CA, valid --ocsp-validity, status
// read from the index at each request.
func serveCRL(ctx context.Context, st *pki.Store, listen string, resign, validity time.Duration, stdout io.Writer) error {
	if _, _, err := st.CA(); err != nil {
		return err
	}
	if _, err := st.WriteCRL(); err != nil {
		return err
	}
	path := filepath.Join(st.Dir, "crl.pem")
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
	responder := &pki.OCSPResponder{Store: st, Validity: validity}
	mux.Handle("POST /ocsp", responder)
	mux.Handle("GET /ocsp/", responder)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("pki serve-crl: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(stdout, "serving %s at http://%s/crl.pem\n", path, ln.Addr())
	fmt.Fprintf(stdout, "OCSP responder at http://%s/ocsp\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var tick <-chan time.Time
	if resign > 0 {
		t := time.NewTicker(resign)
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
