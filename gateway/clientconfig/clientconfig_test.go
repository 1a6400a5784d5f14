package clientconfig

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/fleetgate/fleetgate/gateway/config"
)

func load(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Load("../../configs/gateway.yaml")
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
			`secret = "example-shared-psk-change-me"`, "esp_proposals = aes128gcm16,aes256-sha256,aes128-sha1", "[lac fleetgate]", "lns = vpn.example.net", "name ops", "password change-me-ops",
			"refuse-pap", "refuse-chap\n", "ip route replace 10.10.0.0/16"}, []string{"refuse-mschap-v2", "auth = pubkey"}},
		{"site-hall7", FormatStrongSwan, []string{"auth = pubkey", "certs = site-hall7.crt", "id = site-hall7.sites.example.net", "id = vpn.example.net"}, []string{"secret ="}},
		{"ops-laptop", FormatIPsecConf, []string{"conn fleetgate", "type=transport", "authby=secret", "rightprotoport=17/1701", "ike=aes256-sha256-modp2048,", "modp1024!", `: PSK "example-shared-psk-change-me"`}, nil},
		{"ops-laptop", FormatWindows, []string{"Add-VpnConnection -Name 'fleetgate' -ServerAddress 'vpn.example.net' -TunnelType L2tp -L2tpPsk 'example-shared-psk-change-me' -AuthenticationMethod MSChapv2",
			"Add-VpnConnectionRoute -ConnectionName 'fleetgate' -DestinationPrefix '10.20.0.0/16'"}, nil},
		{"pump-station-2", FormatMikroTik, []string{"/interface l2tp-client add name=fleetgate connect-to=vpn.example.net", "allow=mschap2,chap", "use-ipsec=yes",
			"auth-method=digital-signature", "enc-algorithms=aes-128-gcm,aes-256-cbc,aes-128-cbc", "auth-algorithms=sha256,sha1", "/ip route add dst-address=10.20.0.0/16 gateway=fleetgate"}, []string{"ipsec-secret"}},
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

// TestBridgeYAMLParses checks the bridge section is valid YAML with the
// identity's values.
func TestBridgeYAMLParses(t *testing.T) {
	c := load(t)
	p, err := FromConfig(c, "site-hall7", "203.0.113.10")
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(FormatBridge, p)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Uplink struct {
			Gateways     []string `yaml:"gateways"`
			Auth         string   `yaml:"auth"`
			ID           string   `yaml:"id"`
			IKEPort      int      `yaml:"ike_port"`
			SitePrefixes []string `yaml:"site_prefixes"`
			Routes       []string `yaml:"routes"`
			PPP          struct {
				User, Password string
				Methods        []string
			} `yaml:"ppp"`
			Proposals struct{ IKE, ESP []string } `yaml:"proposals"`
		} `yaml:"uplink"`
	}
	if err := yaml.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("bridge YAML: %v\n%s", err, out)
	}
	u := doc.Uplink
	if len(u.Gateways) != 1 || u.Gateways[0] != "203.0.113.10" || u.Auth != "cert" || u.ID != "site-hall7.sites.example.net" || u.IKEPort != 500 ||
		len(u.SitePrefixes) != 1 || u.SitePrefixes[0] != "10.10.8.0/24" || len(u.Routes) != 1 || u.PPP.User != "site-hall7" || u.PPP.Password != "change-me-hall7" ||
		len(u.Proposals.ESP) != 3 {
		t.Errorf("bridge section: %+v", u)
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
