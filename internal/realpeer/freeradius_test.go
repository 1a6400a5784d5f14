package realpeer

import (
	"context"
	"testing"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"

	"github.com/fleetgate/fleetgate/internal/netns"
)

// TestFreeRADIUSInHost: FreeRADIUS in host b of a pair answers a PAP
// Access-Request from host a with Accept for the right password (with the
// configured reply attribute) and Reject for a wrong one.
func TestFreeRADIUSInHost(t *testing.T) {
	p := netns.Pair(t)
	a, b := p.Host("a"), p.Host("b")
	fr := StartFreeRADIUS(t, b, FreeRADIUSConfig{Users: []RADIUSUser{
		{Name: "site1", Password: "pw1", Reply: []string{"Framed-IP-Address = 10.10.0.9"}},
	}})
	if want := b.Addr.String() + ":1812"; fr.Auth != want {
		t.Fatalf("Auth = %s, want %s", fr.Auth, want)
	}
	ask := func(pw string) *radius.Packet {
		t.Helper()
		req := radius.New(radius.CodeAccessRequest, []byte(fr.Secret))
		_ = rfc2865.UserName_SetString(req, "site1")
		_ = rfc2865.UserPassword_SetString(req, pw)
		var resp *radius.Packet
		err := a.Do(func() (err error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err = radius.Exchange(ctx, req, fr.Auth)
			return err
		})
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		return resp
	}
	if r := ask("pw1"); r.Code != radius.CodeAccessAccept || rfc2865.FramedIPAddress_Get(r).String() != "10.10.0.9" {
		t.Errorf("right password: %v with Framed-IP-Address %v, want Access-Accept with 10.10.0.9", r.Code, rfc2865.FramedIPAddress_Get(r))
	}
	if r := ask("wrong"); r.Code != radius.CodeAccessReject {
		t.Errorf("wrong password: %v, want Access-Reject", r.Code)
	}
}
