package suite

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/fleetgate/fleetgate/bridge/proxy"
	"github.com/fleetgate/fleetgate/downlink/coap"
	"github.com/fleetgate/fleetgate/downlink/registry"
	"github.com/fleetgate/fleetgate/ipstack"
)

// fleetPrefix holds up to 262k endpoint addresses (measurement 6 needs
// 100k; a /24 site prefix is the usual size).
var fleetPrefix = netip.MustParsePrefix("10.64.0.0/14")

// fleetDev is one simulated PSK endpoint: identity = name, key = printable
// text (libcoap's -k and -i take keys as literal text).
type fleetDev struct {
	Name, Key string
	Addr      netip.Addr
}

// makeFleet returns n endpoints s0..s(n-1) with random 16-character keys
// and consecutive addresses in fleetPrefix.
func makeFleet(n int) []fleetDev {
	const alpha = "abcdefghijkmnpqrstuvwxyz23456789"
	raw := make([]byte, 16*n)
	_, _ = rand.Read(raw)
	base := fleetPrefix.Addr().As4()
	bv := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	devs := make([]fleetDev, n)
	for i := range devs {
		k := make([]byte, 16)
		for j := range k {
			k[j] = alpha[int(raw[16*i+j])%len(alpha)]
		}
		v := bv + uint32(i) + 2 // .0 is the network, .1 left for the bridge
		devs[i] = fleetDev{Name: fmt.Sprintf("s%d", i), Key: string(k),
			Addr: netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})}
	}
	return devs
}

// fleetState is the registry state document for devs.
func fleetState(devs []fleetDev) *registry.State {
	st := &registry.State{Version: 1, Prefix: fleetPrefix, Endpoints: make([]registry.Endpoint, len(devs))}
	for i, d := range devs {
		st.Endpoints[i] = registry.Endpoint{Name: d.Name, Protocol: registry.CoAP, Addr: d.Addr, PSKIdentity: d.Name, PSK: []byte(d.Key)}
	}
	return st
}

// fleetRegistry writes devs as a registry state file in dir (one write,
// not one per Add) and opens it, so daemon.New can open the same file.
func fleetRegistry(dir string, devs []fleetDev) (*registry.Registry, string, error) {
	b, err := registry.MarshalState(fleetState(devs))
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(dir, "endpoints.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, "", err
	}
	reg, err := registry.Open(path, fleetPrefix)
	return reg, path, err
}

// devOptions are a device's pion client options: PSK with
// TLS_PSK_WITH_AES_128_CCM_8 only (what tinydtls-class devices use),
// extended master secret, sending a Connection ID when the server asks.
func devOptions(d fleetDev) []dtls.ClientOption {
	key := []byte(d.Key)
	return []dtls.ClientOption{
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(d.Name)),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
	}
}

// devErrors counts errors the devices' go-coap clients reported.
var devErrors atomic.Uint64

// devConn is one connected device.
type devConn struct {
	sock *net.UDPConn
	dc   *dtls.Conn
	cc   *udpclient.Conn // nil for handshake-only devices
}

func (c *devConn) close() {
	if c.cc != nil {
		_ = c.cc.Close()
	} else {
		_ = c.dc.Close()
	}
	_ = c.sock.Close()
	if c.cc != nil {
		<-c.cc.Done()
	}
}

// dialDev opens a socket on src (port 0), handshakes with the server at
// dst and, if withCoAP, runs a go-coap client over the session.
func dialDev(ctx context.Context, src net.IP, dst *net.UDPAddr, d fleetDev, withCoAP bool) (*devConn, error) {
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src})
	if err != nil {
		return nil, err
	}
	dc, err := dtls.ClientWithOptions(sock, dst, devOptions(d)...)
	if err != nil {
		sock.Close()
		return nil, err
	}
	if err := dc.HandshakeContext(ctx); err != nil {
		_ = dc.Close()
		sock.Close()
		return nil, fmt.Errorf("%s: handshake: %w", d.Name, err)
	}
	c := &devConn{sock: sock, dc: dc}
	if withCoAP {
		c.cc = coapdtls.Client(dc, options.WithContext(context.Background()), options.WithErrors(func(error) { devErrors.Add(1) }))
	}
	return c, nil
}

// dialFleet connects every device (par handshakes in flight) and returns
// the connections; on error the ones made are closed.
func dialFleet(devs []fleetDev, src net.IP, dst *net.UDPAddr, par int, withCoAP bool) ([]*devConn, error) {
	conns := make([]*devConn, len(devs))
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	next := make(chan int)
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				c, err := dialDev(ctx, src, dst, devs[i], withCoAP)
				cancel()
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				conns[i] = c
				mu.Unlock()
			}
		}()
	}
	for i := range devs {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		closeFleet(conns)
		return nil, firstErr
	}
	return conns, nil
}

func closeFleet(conns []*devConn) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() { defer wg.Done(); c.close(); <-sem }()
	}
	wg.Wait()
}

// bridgeSide is the bridge's device path as bridge/daemon composes it:
// DTLS/CoAP server (downlink/coap) → CoAP proxy (bridge/proxy) → the
// userspace IP stack (ipstack) holding every endpoint address. Here the
// stack's uplink is an in-memory link to a second stack (the central
// network) instead of the L2TP/IPsec client, so the figure is the bridge's
// relay alone.
type bridgeSide struct {
	srv     *coap.Server
	px      *proxy.Proxy
	st, cen *ipstack.Stack
	link    *memLink
}

func (b *bridgeSide) close() {
	b.srv.Close()
	b.srv.Wait()
	b.px.Close()
	b.link.close()
	b.st.Close()
	b.cen.Close()
}

// newBridgeSide composes the bridge for reg with the central service at
// centralAddr in the far stack (served by serveCentral if non-nil).
func newBridgeSide(reg *registry.Registry, listen string, centralAddr netip.AddrPort) (*bridgeSide, error) {
	link := newMemLink()
	st, err := ipstack.New(ipstack.Config{Output: link.ab.out, Logger: quietLog, Routed: true})
	if err != nil {
		return nil, err
	}
	cen, err := ipstack.New(ipstack.Config{Output: link.ba.out, Logger: quietLog})
	if err != nil {
		st.Close()
		return nil, err
	}
	link.start(st, cen)
	b := &bridgeSide{st: st, cen: cen, link: link}
	if centralAddr.IsValid() {
		if err := cen.AddAddress(netip.PrefixFrom(centralAddr.Addr(), 32)); err != nil {
			b.link.close()
			st.Close()
			cen.Close()
			return nil, err
		}
	}
	px, err := proxy.New(proxy.Config{Stack: st, Registry: reg, Central: centralAddr, Logger: quietLog})
	if err == nil {
		err = px.Start()
	}
	if err != nil {
		b.link.close()
		st.Close()
		cen.Close()
		return nil, err
	}
	b.px = px
	srv, err := coap.New(coap.Config{ListenAddr: listen, Registry: reg, Handler: px.HandleDevice, OnSession: px.OnSession,
		Rate: -1, Logger: quietLog, ParkAfter: bridgeParkAfter})
	if err != nil {
		px.Close()
		b.link.close()
		st.Close()
		cen.Close()
		return nil, err
	}
	px.SetSessions(srv.Session)
	b.srv = srv
	go func() { _ = srv.Serve() }()
	return b, nil
}

// memLink joins two stacks back to back (the bridge's uplink replaced by
// memory): one bounded queue and one pump goroutine per direction, so no
// stack is re-entered from its own send path. Full queues drop (counted).
type memLink struct {
	ab, ba *memDir
	done   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

type memDir struct {
	q       chan []byte
	done    chan struct{}
	dropped atomic.Uint64
}

func newMemLink() *memLink {
	done := make(chan struct{})
	return &memLink{done: done,
		ab: &memDir{q: make(chan []byte, 16384), done: done},
		ba: &memDir{q: make(chan []byte, 16384), done: done}}
}

func (d *memDir) out(pkt []byte) error {
	select {
	case d.q <- append([]byte(nil), pkt...):
	case <-d.done:
	default:
		d.dropped.Add(1)
	}
	return nil
}

func (l *memLink) start(a, b *ipstack.Stack) {
	pump := func(d *memDir, dst *ipstack.Stack) {
		defer l.wg.Done()
		for {
			select {
			case p := <-d.q:
				_ = dst.InjectInbound(p)
			case <-l.done:
				return
			}
		}
	}
	l.wg.Add(2)
	go pump(l.ab, b)
	go pump(l.ba, a)
}

func (l *memLink) close() {
	l.once.Do(func() { close(l.done) })
	l.wg.Wait()
}
