package server

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/radius"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// TestAccountingIPv6Prefix: a session's IPv6 site prefix reaches a real
// FreeRADIUS's accounting detail as Delegated-IPv6-Prefix (RFC 4818) in
// Start and Stop, beside Framed-IP-Address; an IPv4-only session's
// records carry none.
func TestAccountingIPv6Prefix(t *testing.T) {
	fr := realpeer.StartFreeRADIUS(t, nil, realpeer.FreeRADIUSConfig{})
	cfg, err := config.Parse("gw.yaml", []byte(fmt.Sprintf("psk: {shared: x}\nmetrics: {listen: \"off\"}\nradius: {auth: %q, acct: %q, secret: %q, nas_identifier: gw-t}\n",
		fr.Auth, fr.Acct, fr.Secret)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Host: newNullHost()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, func() bool { return srv.Host() != nil })
	env := srv.Env()
	v4 := newTestSession("site4", "10.10.0.40")
	v6 := &testSession6{testSession: newTestSession("site6", "10.10.0.60"), pfx: netip.MustParsePrefix("2001:db8:77::/56")}
	for _, s := range []Session{v4, v6} {
		if err := env.Register(s); err != nil {
			t.Fatal(err)
		}
	}
	env.Unregister(v6, radius.CauseUserRequest)
	env.Unregister(v4, radius.CauseUserRequest)
	waitFor(t, func() bool { return strings.Count(fr.Detail(), "Acct-Status-Type = Stop") == 2 })
	// The detail file holds one record per blank-line-separated block.
	with := 0
	for _, rec := range strings.Split(fr.Detail(), "\n\n") {
		switch {
		case strings.Contains(rec, "Framed-IP-Address = 10.10.0.60"):
			if !strings.Contains(rec, "Delegated-IPv6-Prefix = 2001:db8:77::/56") {
				t.Errorf("site6's record lacks its prefix:\n%s", rec)
			}
			with++
		case strings.Contains(rec, "Framed-IP-Address = 10.10.0.40"):
			if strings.Contains(rec, "IPv6-Prefix") {
				t.Errorf("site4's record carries an IPv6 prefix:\n%s", rec)
			}
		}
	}
	if with != 2 {
		t.Fatalf("site6 records with its prefix: %d, want 2 (Start, Stop):\n%s", with, fr.Detail())
	}
}
