package clientconfig

import (
	"errors"
	"github.com/fleetgate/fleetgate/internal/testenv"
	"strings"
	"testing"

	bconfig "github.com/fleetgate/fleetgate/bridge/config"
	"github.com/fleetgate/fleetgate/gateway/config"
)

func load(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Load(testenv.ExampleConfig(t, "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRender(t *testing.T) {
	c := load(t)
	tests := []struct {
		identity, format string
		want             []string
		notWant          []string
	}{
		{"ops-laptop", FormatStrongSwan, []string{"version = 1", "remote_addrs = vpn.example.net", "auth = psk", "mode = transport", "local_ts = dynamic[udp/1701]",
			`secret = "example-shared-psk-change-me"`, "esp_proposals = aes128gcm16,aes256gcm16,aes256-sha256,", "[lac fleetgate]", "lns = vpn.example.net", "name ops", "password change-me-ops",
			"refuse-pap", "refuse-chap\n", "ip route replace 10.10.0.0/16"}, []string{"refuse-mschap-v2", "auth = pubkey"}},
		{"site-hall7", FormatStrongSwan, []string{"auth = pubkey", "certs = site-hall7.crt", "id = site-hall7.sites.example.net", "id = vpn.example.net"}, []string{"secret ="}},
		{"ops-laptop", FormatIPsecConf, []string{"conn fleetgate", "type=transport", "authby=secret", "rightprotoport=17/1701", "ike=aes256-sha256-ecp256,", "aes128-sha1-modp2048!", `: PSK "example-shared-psk-change-me"`}, nil},
		{"ops-laptop", FormatWindows, []string{"Add-VpnConnection -Name 'fleetgate' -ServerAddress 'vpn.example.net' -TunnelType L2tp -L2tpPsk 'example-shared-psk-change-me' -AuthenticationMethod MSChapv2",
			"Add-VpnConnectionRoute -ConnectionName 'fleetgate' -DestinationPrefix '10.20.0.0/16'",
			"no registry change (AssumeUDPEncapsulationContextOnSendRule) is needed for this gateway",
			"needed exactly when Windows sees the SERVER behind NAT", "never with this gateway"}, []string{"Set-ItemProperty"}},
		{"pump-station-2", FormatMikroTik, []string{"/interface l2tp-client add name=fleetgate connect-to=vpn.example.net", "allow=mschap2,chap", "use-ipsec=yes",
			"auth-method=digital-signature", "enc-algorithms=aes-128-gcm,aes-256-gcm,aes-256-cbc,aes-128-cbc", "auth-algorithms=sha256,sha512,sha1", "/ip route add dst-address=10.20.0.0/16 gateway=fleetgate"}, []string{"ipsec-secret"}},
		{"ops-laptop", FormatMikroTik, []string{`ipsec-secret="example-shared-psk-change-me"`, "allow=mschap2 "}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.identity+"/"+tt.format, func(t *testing.T) {
			p, err := FromConfig(c, tt.identity, "vpn.example.net")
			if err != nil {
				t.Fatal(err)
			}
			out, err := Render(tt.format, p)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output contains %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestBridgeYAMLParses: the bridge section goes through the bridge's own
// config parser and carries the identity's values; an identity without a
// framed route is refused.
func TestBridgeYAMLParses(t *testing.T) {
	c := load(t)
	for _, tt := range []struct {
		identity string
		cert     bool
	}{{"site-hall7", true}, {"pump-station-2", false}} {
		p, err := FromConfig(c, tt.identity, "203.0.113.10")
		if err != nil {
			t.Fatal(err)
		}
		if !tt.cert { // the reference config's sites all use certificates
			p.Identity.Auth, p.PSK = config.AuthPSK, "site-psk"
		}
		out, err := Render(FormatBridge, p)
		if err != nil {
			t.Fatal(err)
		}
		bc, err := bconfig.Parse([]byte(out))
		if err != nil {
			t.Fatalf("%s: the bridge rejects its section: %v\n%s", tt.identity, err, out)
		}
		u := bc.Uplink
		id := c.Identity(tt.identity)
		if bc.Site != tt.identity || bc.Prefix != id.RoutePrefixes[0] || u.Mode != "l2tp-ipsec" || len(u.Gateways) != 1 || u.Gateways[0] != "203.0.113.10" ||
			u.NATTPort != 4500 || u.PPPUser != id.PPP.User || u.PPPPassword != id.PPP.Password || u.LocalID != id.ID ||
			u.ESPProposals != strings.Join(c.Proposals.ESP, ",") || u.IKEProposals != strings.Join(c.Proposals.IKE, ",") {
			t.Errorf("%s: bridge config %+v", tt.identity, bc)
		}
		if tt.cert != (u.Cert != "" && u.PSK == "") || (!tt.cert && u.PSK != "site-psk") {
			t.Errorf("%s: cert %q psk %q", tt.identity, u.Cert, u.PSK)
		}
	}
	p, _ := FromConfig(c, "ops-laptop", "gw")
	if _, err := Render(FormatBridge, p); !errors.Is(err, ErrNoSitePrefix) {
		t.Errorf("identity without routes: %v", err)
	}
	p.IKEPort = 1500
	if v := (view{p}); v.GatewayAddr() != "gw:1500" {
		t.Errorf("GatewayAddr with port 1500: %s", v.GatewayAddr())
	}
}

func TestErrors(t *testing.T) {
	c := load(t)
	if _, err := FromConfig(c, "nobody", "gw"); !errors.Is(err, ErrUnknownIdentity) {
		t.Errorf("unknown identity: got %v", err)
	}
	if _, err := FromConfig(c, "ops-laptop", ""); !errors.Is(err, ErrNoGateway) {
		t.Errorf("no gateway: got %v", err)
	}
	p, _ := FromConfig(c, "ops-laptop", "gw")
	if _, err := Render("cisco", p); !errors.Is(err, ErrUnknownFormat) {
		t.Errorf("unknown format: got %v", err)
	}
	// PowerShell quoting: a single quote in a PSK is doubled.
	p.PSK = "it's"
	out, _ := Render(FormatWindows, p)
	if !strings.Contains(out, "-L2tpPsk 'it''s'") {
		t.Errorf("PowerShell quoting:\n%s", out)
	}
}
