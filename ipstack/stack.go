// Package ipstack wraps gVisor's userspace TCP/IP stack (netstack) behind a
// small API: one NIC fed with raw IPv4 and IPv6 packets in both directions, any number
// of local addresses, and std-library net.Conn / net.PacketConn /
// net.Listener values bound to those addresses.
//
// The edge bridge uses it to hold the PPP-assigned address and the site's
// routed prefix as a whole (AddPrefix, prefix.go: no per-endpoint address),
// so that upstream traffic leaves from the endpoint's own address
// (sensor-17 → 10.10.8.17) and central services can reach each endpoint by
// address through one demultiplexer (HandleUDP). The gateway may use it for its
// unprivileged (no TUN) data plane.
//
// Packets leave the stack through Config.Output (what the PPP link carries)
// and enter it through InjectInbound. No root, TUN or kernel support is
// needed.
package ipstack

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// DefaultMTU is used when Config.MTU is zero: a typical PPP MTU inside
// L2TP/IPsec with NAT-T (1500 minus ESP/UDP/L2TP/PPP overhead, rounded down).
const DefaultMTU = 1400

// nicID is the only NIC of the stack.
const nicID tcpip.NICID = 1

// Config configures a Stack.
type Config struct {
	// MTU of the NIC in bytes; DefaultMTU when zero.
	MTU int
	// Output receives every IPv4 or IPv6 packet the stack sends. It is called
	// synchronously on the stack's send path: it must not block for long,
	// must not retain pkt after returning (the buffer is reused) and must
	// not inject into the same Stack synchronously. A non-nil error counts
	// the packet as dropped.
	Output func(pkt []byte) error
	// Logger receives lifecycle lines; nil discards.
	Logger *slog.Logger
	// Routed lets the stack own routed prefixes (AddPrefix, prefix.go).
	// gVisor's promiscuous mode, which that needs, only works without
	// local loopback: a packet from the stack to one of its own addresses
	// then leaves through Output instead of looping back.
	Routed bool
}

// Stats are the stack's counters. All fields are safe for concurrent use.
type Stats struct {
	// PacketsIn counts packets accepted by InjectInbound.
	PacketsIn atomic.Uint64
	// PacketsOut counts packets handed to Output without error.
	PacketsOut atomic.Uint64
	// BytesIn and BytesOut count the IP bytes of those packets.
	BytesIn, BytesOut atomic.Uint64
	// InboundDropped counts packets InjectInbound refused (not IP,
	// malformed, stack closed).
	InboundDropped atomic.Uint64
	// OutputErrors counts packets whose Output call failed.
	OutputErrors atomic.Uint64
	// Route counts the routed-prefix data plane (prefix.go).
	Route RouteStats
	// UDPFastIn counts datagrams the UDP fast path (listen.go) queued to
	// a ListenUDP socket without gVisor; UDPQueueFull datagrams dropped
	// because that socket held ListenQueueLen unread.
	UDPFastIn, UDPQueueFull atomic.Uint64
}

// Stack is a userspace IPv4/IPv6 stack with one NIC. Its methods are safe for
// concurrent use.
type Stack struct {
	s      *stack.Stack
	ep     *linkEP
	log    *slog.Logger
	closed atomic.Bool

	mu    sync.Mutex
	addrs map[netip.Addr]netip.Prefix // guarded by mu

	rt routing

	// Stats holds the stack's counters.
	Stats Stats
}

// New creates a Stack with a default route through its NIC.
func New(cfg Config) (*Stack, error) {
	if cfg.Output == nil {
		return nil, ErrNoOutput
	}
	mtu := cfg.MTU
	if mtu <= 0 {
		mtu = DefaultMTU
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	st := &Stack{log: log, addrs: make(map[netip.Addr]netip.Prefix)}
	st.rt.init()
	st.rt.allowed = cfg.Routed
	st.s = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{udp.NewProtocol, tcp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        !cfg.Routed,
	})
	st.ep = &linkEP{Endpoint: channel.New(0, uint32(mtu), ""), st: st, output: cfg.Output}
	if err := st.s.CreateNIC(nicID, st.ep); err != nil {
		st.s.Close()
		return nil, fmt.Errorf("ipstack: create NIC: %s", err)
	}
	sack := tcpip.TCPSACKEnabled(true)
	_ = st.s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	st.s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}, {Destination: header.IPv6EmptySubnet, NIC: nicID}})
	return st, nil
}

// linkEP is the NIC: inbound via the embedded channel endpoint's
// InjectInbound, outbound straight to Config.Output without a queue.
type linkEP struct {
	*channel.Endpoint
	st     *Stack
	output func([]byte) error
}

// WritePackets implements stack.LinkEndpoint.
func (e *linkEP) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		v := pkt.ToView()
		b := v.AsSlice()
		if err := e.output(b); err != nil {
			e.st.Stats.OutputErrors.Add(1)
		} else {
			e.st.Stats.PacketsOut.Add(1)
			e.st.Stats.BytesOut.Add(uint64(len(b)))
		}
		v.Release()
		n++
	}
	return n, nil
}

// InjectInbound hands one IPv4 or IPv6 packet (as received from the PPP
// link) to the stack. pkt is copied; the caller may reuse it.
func (st *Stack) InjectInbound(pkt []byte) error {
	if st.closed.Load() {
		st.Stats.InboundDropped.Add(1)
		return ErrClosed
	}
	if len(pkt) >= ipv6HeaderLen && header.IPVersion(pkt) == header.IPv6Version {
		return st.injectInbound6(pkt)
	}
	if len(pkt) < header.IPv4MinimumSize || header.IPVersion(pkt) != header.IPv4Version {
		st.Stats.InboundDropped.Add(1)
		return ErrNotIPv4
	}
	if st.rt.routed.Load() && st.routeInbound(pkt) || st.rt.nlisten.Load() > 0 && st.deliverLocal(pkt) {
		st.countIn(pkt)
		return nil
	}
	st.toNetstack(header.IPv4ProtocolNumber, pkt)
	return nil
}

// toNetstack hands pkt (copied) to gVisor's network layer as proto and
// counts it; for what the routed prefix and the listeners did not take.
func (st *Stack) toNetstack(proto tcpip.NetworkProtocolNumber, pkt []byte) {
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	st.ep.InjectInbound(proto, pb)
	pb.DecRef()
	st.countIn(pkt)
}

// countIn counts pkt as accepted by InjectInbound.
func (st *Stack) countIn(pkt []byte) {
	st.Stats.PacketsIn.Add(1)
	st.Stats.BytesIn.Add(uint64(len(pkt)))
}

// AddAddress adds a local address (IPv4 or IPv6). A prefix length below 32 also makes the
// prefix on-link (no effect on routing: everything leaves through the single
// NIC). Adding an address that exists already is not an error.
func (st *Stack) AddAddress(p netip.Prefix) error {
	if !p.IsValid() || p.Addr().Is4In6() {
		return ErrBadAddress
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.addrs[p.Addr()]; ok {
		return nil
	}
	pa := tcpip.ProtocolAddress{
		Protocol: netProto(p.Addr()),
		AddressWithPrefix: tcpip.AddressWithPrefix{
			Address:   tcpAddr(p.Addr()),
			PrefixLen: p.Bits(),
		},
	}
	if err := st.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("ipstack: add address %s: %s", p, err)
	}
	st.addrs[p.Addr()] = p
	st.syncAssigned()
	st.log.Debug("address added", "addr", p.String())
	return nil
}

// RemoveAddress removes a local address. TCP connections bound to it are
// aborted first (RST to the peer, sent from the address while it is still
// ours), so none of them lingers in a closing state to send from the
// address once it was given to someone else. The same holds for an
// address of a routed prefix that was never added (AddPrefix): its TCP
// connections (spoofed-source dials) are aborted and its virtual UDP
// conns closed. Removing an unknown address is not an error.
func (st *Stack) RemoveAddress(a netip.Addr) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	_, assigned := st.addrs[a]
	if !assigned && !st.Routed(a) {
		return nil
	}
	ta := tcpAddr(a)
	for _, ep := range st.s.RegisteredEndpoints() {
		ie, ok := ep.(interface{ Info() tcpip.EndpointInfo })
		if !ok {
			continue
		}
		if info, ok := ie.Info().(*stack.TransportEndpointInfo); ok && info.TransProto == tcp.ProtocolNumber && info.ID.LocalAddress == ta {
			ep.Abort()
		}
	}
	st.closeRouted(a)
	if !assigned {
		return nil
	}
	if err := st.s.RemoveAddress(nicID, ta); err != nil {
		return fmt.Errorf("ipstack: remove address %s: %s", a, err)
	}
	delete(st.addrs, a)
	st.syncAssigned()
	return nil
}

// Addresses returns the local addresses in no particular order.
func (st *Stack) Addresses() []netip.Prefix {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]netip.Prefix, 0, len(st.addrs))
	for _, p := range st.addrs {
		out = append(out, p)
	}
	return out
}

// MTU returns the NIC's MTU.
func (st *Stack) MTU() int { return int(st.ep.MTU()) }

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, error) {
	if !ap.Addr().IsValid() && ap.Port() == 0 {
		return tcpip.FullAddress{}, ErrBadAddress
	}
	fa := tcpip.FullAddress{NIC: nicID, Port: ap.Port()}
	if ap.Addr().IsValid() && !ap.Addr().IsUnspecified() {
		fa.Addr = tcpAddr(ap.Addr())
	}
	return fa, nil
}

// tcpAddr converts a (IPv4, IPv4-mapped or IPv6) to gVisor's form.
func tcpAddr(a netip.Addr) tcpip.Address {
	if a = a.Unmap(); a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// netProto is the network protocol of a: IPv6 for an IPv6 address
// (including ::), IPv4 otherwise (IPv4, IPv4-mapped, or no address).
func netProto(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.IsValid() && a.Unmap().Is6() {
		return ipv6.ProtocolNumber
	}
	return ipv4.ProtocolNumber
}

// DialUDP returns a connected UDP socket from src (a local address; port 0
// picks an ephemeral port) to dst. From an address of a routed prefix
// that is not assigned, the conn is virtual (prefix.go): no gVisor socket.
func (st *Stack) DialUDP(src, dst netip.AddrPort) (net.Conn, error) {
	if st.closed.Load() {
		return nil, ErrClosed
	}
	if s, d := src.Addr().Unmap(), dst.Addr().Unmap(); s.Is4() == d.Is4() && s.IsValid() && !st.assigned(s) && st.Routed(s) {
		return st.dialRouted(netip.AddrPortFrom(s, src.Port()), netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()))
	}
	la, err := fullAddr(src)
	if err != nil {
		return nil, err
	}
	ra, err := fullAddr(dst)
	if err != nil {
		return nil, err
	}
	c, err := gonet.DialUDP(st.s, &la, &ra, netProto(dst.Addr()))
	if err != nil {
		return nil, fmt.Errorf("ipstack: dial udp %s->%s: %w", src, dst, err)
	}
	return c, nil
}

// ListenUDP returns an unconnected UDP socket bound to addr (an
// unspecified address listens on every local address). Whole datagrams to
// it are delivered without gVisor (listen.go); what it sends goes through
// gVisor.
func (st *Stack) ListenUDP(addr netip.AddrPort) (net.PacketConn, error) {
	if st.closed.Load() {
		return nil, ErrClosed
	}
	la, err := fullAddr(addr)
	if err != nil {
		return nil, err
	}
	c, err := gonet.DialUDP(st.s, &la, nil, netProto(addr.Addr()))
	if err != nil {
		return nil, fmt.Errorf("ipstack: listen udp %s: %w", addr, err)
	}
	ua, _ := c.LocalAddr().(*net.UDPAddr)
	if ua == nil {
		return c, nil
	}
	key := ua.AddrPort()
	key = netip.AddrPortFrom(key.Addr().Unmap(), key.Port())
	if !key.Addr().IsValid() || key.Addr().IsUnspecified() {
		key = netip.AddrPortFrom(netip.IPv4Unspecified(), key.Port())
	}
	if !key.Addr().Is4() {
		return c, nil
	}
	return st.listenFast(key, c), nil
}

// DialTCP opens a TCP connection from src (a local address, ephemeral port)
// to dst.
func (st *Stack) DialTCP(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	if st.closed.Load() {
		return nil, ErrClosed
	}
	la, err := fullAddr(netip.AddrPortFrom(src, 0))
	if err != nil {
		return nil, err
	}
	ra, err := fullAddr(dst)
	if err != nil {
		return nil, err
	}
	c, err := gonet.DialTCPWithBind(ctx, st.s, la, ra, netProto(dst.Addr()))
	if err != nil {
		return nil, fmt.Errorf("ipstack: dial tcp %s->%s: %w", src, dst, err)
	}
	return c, nil
}

// ListenTCP returns a TCP listener on addr.
func (st *Stack) ListenTCP(addr netip.AddrPort) (net.Listener, error) {
	if st.closed.Load() {
		return nil, ErrClosed
	}
	la, err := fullAddr(addr)
	if err != nil {
		return nil, err
	}
	l, err := gonet.ListenTCP(st.s, la, netProto(addr.Addr()))
	if err != nil {
		return nil, fmt.Errorf("ipstack: listen tcp %s: %w", addr, err)
	}
	return l, nil
}

// Close tears the stack down; open connections fail. Safe to call twice.
func (st *Stack) Close() {
	if st.closed.Swap(true) {
		return
	}
	st.rt.mu.RLock()
	cs := make([]*udpConn, 0, len(st.rt.conns))
	for _, c := range st.rt.conns {
		cs = append(cs, c)
	}
	ls := make([]*udpListener, 0, len(st.rt.listeners))
	for _, l := range st.rt.listeners {
		ls = append(ls, l)
	}
	st.rt.mu.RUnlock()
	for _, c := range cs {
		_ = c.Close()
	}
	for _, l := range ls {
		_ = l.Close()
	}
	st.s.Close()
	st.s.Wait()
}
