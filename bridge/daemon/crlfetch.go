package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Bounds of the uplink.crl_url fetch.
const (
	defaultCRLRefresh = 5 * time.Minute
	crlRetry          = 10 * time.Second // after a failed fetch (uplink down, server away)
	crlFetchTimeout   = 20 * time.Second
	maxCRLBytes       = 4 << 20
)

// crlFetcher fetches uplink.crl_url through the tunnel (from the bridge's
// own VPN address) and publishes what it gets into the uplink's
// gatewayCRL.
type crlFetcher struct {
	s       *Site
	crl     *gatewayCRL
	url     string
	every   time.Duration
	client  *http.Client
	fetches *prometheus.CounterVec
}

func (s *Site) newCRLFetcher(crl *gatewayCRL) *crlFetcher {
	u := s.cfg.Uplink
	f := &crlFetcher{s: s, crl: crl, url: u.CRLURL, every: u.CRLRefresh,
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uplink_crl_fetches_total", Help: "uplink.crl_url fetches through the tunnel, by result (ok, error, rejected: not signed by uplink.ca, unparsable or older than the CRL in use).",
		}, []string{"result"})}
	if f.every == 0 {
		f.every = defaultCRLRefresh
	}
	for _, r := range []string{"ok", "error", "rejected"} {
		f.fetches.WithLabelValues(r)
	}
	f.client = &http.Client{Timeout: crlFetchTimeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			dst, ok := s.cfg.Hosts[host]
			if !ok {
				if dst, err = netip.ParseAddr(host); err != nil {
					return nil, fmt.Errorf("crl_url host %q: not an address nor a hosts: name", host)
				}
			}
			p, err := net.LookupPort("tcp", port)
			if err != nil {
				return nil, err
			}
			src := s.cfg.BridgeAddr
			if !src.IsValid() {
				if src, err = netip.ParseAddr(s.up.LocalAddr()); err != nil {
					return nil, fmt.Errorf("uplink down: no VPN address to fetch the CRL from")
				}
			}
			return s.st.DialTCP(ctx, src, netip.AddrPortFrom(dst, uint16(p)))
		},
	}}
	return f
}

// run fetches until stop closes: every f.every after a success, every
// crlRetry after a failure.
func (f *crlFetcher) run(stop <-chan struct{}) {
	wait := time.Second
	for {
		select {
		case <-stop:
			return
		case <-time.After(wait):
		}
		wait = f.every
		if err := f.fetch(stop); err != nil {
			wait = min(f.every, crlRetry)
		}
	}
}

func (f *crlFetcher) fetch(stop <-chan struct{}) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
	if err != nil {
		return err
	}
	resp, err := f.client.Do(req)
	if err == nil && resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		err = fmt.Errorf("HTTP %s", resp.Status)
	}
	if err != nil {
		f.fetches.WithLabelValues("error").Inc()
		f.s.log.Debug("uplink CRL fetch failed", "url", f.url, "err", err)
		return err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxCRLBytes+1))
	resp.Body.Close()
	if err == nil && len(b) > maxCRLBytes {
		err = fmt.Errorf("CRL over %d bytes", maxCRLBytes)
	}
	if err == nil {
		err = f.crl.publish(b, f.url)
	}
	if err != nil {
		f.fetches.WithLabelValues("rejected").Inc()
		f.s.log.Warn("uplink CRL from crl_url refused; the previous CRL stays", "url", f.url, "err", err)
		return err
	}
	f.fetches.WithLabelValues("ok").Inc()
	if cu, ok := f.s.up.(*clientUplink); ok {
		cu.dropIfRevoked()
	}
	rl := f.crl.get()
	f.s.log.Info("uplink CRL fetched", "url", (&url.URL{Scheme: "http", Host: req.URL.Host, Path: req.URL.Path}).String(),
		"number", rl.Number.String(), "revoked", len(rl.RevokedCertificateEntries), "next_update", rl.NextUpdate)
	return nil
}
