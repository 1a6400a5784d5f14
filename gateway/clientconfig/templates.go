package clientconfig

const xl2tpdPart = `
# ---- /etc/xl2tpd/xl2tpd.conf ----
[lac {{.Name}}]
lns = {{.Gateway}}
ppp debug = no
pppoptfile = /etc/ppp/options.xl2tpd.{{.Name}}
length bit = yes
autodial = yes
redial = yes
redial timeout = 5

# ---- /etc/ppp/options.xl2tpd.{{.Name}} ----
ipcp-accept-local
ipcp-accept-remote
noccp
noauth
mtu 1400
mru 1400
nodefaultroute
usepeerdns
connect-delay 5000
name {{.Identity.PPP.User}}
password {{.Identity.PPP.Password}}
{{.PPPAuthOptions}}

# ---- routes to push after the link is up (e.g. /etc/ppp/ip-up.d/{{.Name}}) ----
{{- range .Routes}}
# ip route replace {{.}} dev "$PPP_IFACE"
{{- end}}
`

const strongswanTmpl = `# fleetgate client configuration for identity {{.Identity.Name}}
# strongSwan (swanctl) + xl2tpd, IKEv1 transport mode for L2TP (UDP/1701).
#
# ---- /etc/swanctl/conf.d/{{.Name}}.conf ----
connections {
  {{.Name}} {
    version = 1
    remote_addrs = {{.Gateway}}
{{- if ne .IKEPort 500}}
    remote_port = {{.IKEPort}}
{{- end}}
    proposals = {{.IKEList}}
    encap = yes
    dpd_delay = 30s
    local {
{{- if .Cert}}
      auth = pubkey
      certs = {{.Identity.Name}}.crt
      id = {{.Identity.ID}}
{{- else}}
      auth = psk
{{- if .Identity.ID}}
      id = {{.Identity.ID}}
{{- end}}
{{- end}}
    }
    remote {
{{- if .Cert}}
      auth = pubkey
      id = {{.GatewayID}}
{{- else}}
      auth = psk
{{- if .ConfiguredID}}
      id = {{.GatewayID}}
{{- end}}
{{- end}}
    }
    children {
      {{.Name}}-l2tp {
        mode = transport
        local_ts = dynamic[udp/1701]
        remote_ts = dynamic[udp/1701]
        esp_proposals = {{.ESPList}}
        start_action = start
        close_action = start
        dpd_action = restart
      }
    }
  }
}
{{- if not .Cert}}
secrets {
  ike-{{.Name}} {
    secret = {{.YQ .PSK}}
  }
}
{{- else}}
# Install the certificate material from ` + "`gateway pki issue {{.Identity.Name}}`" + `:
#   /etc/swanctl/x509ca/ca.crt  /etc/swanctl/x509/{{.Identity.Name}}.crt  /etc/swanctl/private/{{.Identity.Name}}.key
{{- end}}
` + xl2tpdPart

const ipsecTmpl = `# fleetgate client configuration for identity {{.Identity.Name}}
# strongSwan/libreswan (ipsec.conf) + xl2tpd, IKEv1 transport mode.
#
# ---- /etc/ipsec.conf ----
conn {{.Name}}
    keyexchange=ikev1
    type=transport
    authby={{if .Cert}}pubkey{{else}}secret{{end}}
    right={{.Gateway}}
    rightprotoport=17/1701
    leftprotoport=17/1701
    left=%defaultroute
{{- if .Cert}}
    leftcert={{.Identity.Name}}.crt
    leftid={{.Identity.ID}}
    rightid={{.IPsecRightID}}
{{- else}}
{{- if .Identity.ID}}
    leftid={{.Identity.ID}}
{{- end}}
{{- if .ConfiguredID}}
    rightid={{.IPsecRightID}}
{{- end}}
{{- end}}
    ike={{.LegacyIKE}}
    esp={{.LegacyESP}}
    forceencaps=yes
    dpddelay=30
    dpdaction=restart
    auto=start

# ---- /etc/ipsec.secrets ----
{{- if .Cert}}
: ECDSA {{.Identity.Name}}.key
{{- else}}
: PSK {{.YQ .PSK}}
{{- end}}
` + xl2tpdPart

const windowsTmpl = `# fleetgate client configuration for identity {{.Identity.Name}} (Windows PowerShell, run as the user)
{{- if .Cert}}
# Certificate authentication: bundle the key and certificate first (on any machine with openssl):
#   openssl pkcs12 -export -in {{.Identity.Name}}.crt -inkey {{.Identity.Name}}.key -certfile ca.crt -out {{.Identity.Name}}.p12
# then import {{.Identity.Name}}.p12 into the LOCAL MACHINE personal store and ca.crt into Trusted Root:
#   Import-PfxCertificate -FilePath {{.Identity.Name}}.p12 -CertStoreLocation Cert:\LocalMachine\My
#   Import-Certificate -FilePath ca.crt -CertStoreLocation Cert:\LocalMachine\Root
Add-VpnConnection -Name {{.Q .Name}} -ServerAddress {{.Q .Gateway}} -TunnelType L2tp -AuthenticationMethod {{.WindowsAuth}} -EncryptionLevel Required -SplitTunneling -RememberCredential -Force
{{- else}}
Add-VpnConnection -Name {{.Q .Name}} -ServerAddress {{.Q .Gateway}} -TunnelType L2tp -L2tpPsk {{.Q .PSK}} -AuthenticationMethod {{.WindowsAuth}} -EncryptionLevel Required -SplitTunneling -RememberCredential -Force
{{- end}}
{{- range .Routes}}
Add-VpnConnectionRoute -ConnectionName {{$.Q $.Name}} -DestinationPrefix {{$.Q .}}
{{- end}}
# Routes are also pushed by the gateway (DHCPINFORM options 121/249).
# Connect once with the PPP credentials (user {{.Q .Identity.PPP.User}}):
rasdial {{.Name}} {{.Identity.PPP.User}} {{.Q .Identity.PPP.Password}}
# NAT: no registry change (AssumeUDPEncapsulationContextOnSendRule) is needed for this gateway,
# whether this PC, the gateway or both sit behind NAT (a home router, a cloud VM's 1:1 NAT, a port
# forward): the gateway answers NAT detection so that only this PC appears to be behind one, which
# Windows accepts by default. Error 809 therefore means UDP 500 or 4500 is blocked on the way.
# The value (2) is needed exactly when Windows sees the SERVER behind NAT, i.e. the server's NAT-D
# hash does not match the address Windows dialled: never with this gateway (it returns the hash
# Windows computed for that address), only with another L2TP/IPsec server behind NAT.
`

const mikrotikTmpl = `# fleetgate client configuration for identity {{.Identity.Name}} (MikroTik RouterOS 6.45+/7)
/ip ipsec proposal set [find default=yes] enc-algorithms={{.MikroTikEnc}} auth-algorithms={{.MikroTikAuth}}
{{- if .Cert}}
# Certificate authentication: import ca.crt, {{.Identity.Name}}.crt and .key with /certificate import,
# then point the dynamic IPsec peer created by use-ipsec=yes at it:
/interface l2tp-client add name={{.Name}} connect-to={{.Gateway}} user="{{.Identity.PPP.User}}" password="{{.Identity.PPP.Password}}" allow={{.MikroTikAllow}} use-ipsec=yes add-default-route=no disabled=no
/ip ipsec identity set [find peer~"l2tp-out"] auth-method=digital-signature certificate={{.Identity.Name}}
{{- else}}
/interface l2tp-client add name={{.Name}} connect-to={{.Gateway}} user="{{.Identity.PPP.User}}" password="{{.Identity.PPP.Password}}" allow={{.MikroTikAllow}} use-ipsec=yes ipsec-secret="{{.PSK}}" add-default-route=no disabled=no
{{- end}}
{{- range .Routes}}
/ip route add dst-address={{.}} gateway={{$.Name}} comment="fleetgate push route"
{{- end}}
`

const bridgeTmpl = `# fleetgate edge bridge: configuration for identity {{.Identity.Name}}.
# Merge into the bridge's YAML (reference: configs/bridge.yaml), then
# ` + "`bridge --check-config`" + `.
site: {{.YQ .Identity.Name}}
# The site prefix the gateway routes to this session (framed route): every
# endpoint gets its own address in it.
prefix: {{.SitePrefix}}
uplink:
  mode: l2tp-ipsec
  gateways: [{{.YQ .GatewayAddr}}]
  nat_t_port: {{.NATTPort}}
  ike_proposals: {{.YQ .IKEList}}
  esp_proposals: {{.YQ .ESPList}}
{{- if .Cert}}
  # Certificate and key issued with ` + "`gateway pki issue`" + `; ca verifies the gateway.
  cert: /etc/fleetgate/{{.Identity.Name}}.crt
  key: /etc/fleetgate/{{.Identity.Name}}.key
  ca: /etc/fleetgate/ca.crt
  # The gateway's identity: a subjectAltName of its certificate.
  gateway_id: {{.YQ .GatewayID}}
{{- else}}
  psk: {{.YQ .PSK}}
{{- end}}
{{- if .Identity.ID}}
  local_id: {{.YQ .Identity.ID}}
{{- end}}
  ppp_user: {{.YQ .Identity.PPP.User}}
  ppp_password: {{.YQ .Identity.PPP.Password}}
{{- if .Routes}}
# The gateway pushes these central routes to this identity; the bridge asks
# for them after every connect (DHCPINFORM) and shows them in its status:
#   {{range $i, $r := .Routes}}{{if $i}}, {{end}}{{$r}}{{end}}
{{- end}}
`
