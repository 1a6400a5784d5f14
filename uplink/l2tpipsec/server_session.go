// ServerSession: one accepted L2TP/PPP session and its accessors.

package l2tpipsec

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/uplink/esp"
	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/peerid"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// Hangup ends the session, its tunnel and the peer's IKE SA (telling the
// peer), e.g. when its certificate was revoked: the peer cannot open a
// new session over the old SA. It does not wait.
func (ss *ServerSession) Hangup(why error) {
	ss.srv.hangup(ss.ps, ss.sess, why)
}

// ServerSession is one client's PPP session on the server, up after IPCP.
type ServerSession struct {
	srv  *Server
	ps   *peerState
	sess *l2tp.Session
	ppp  *ppp.Conn
	up   atomic.Bool
	// rejected: the Authenticator refused a login on this link.
	rejected atomic.Bool
	started  time.Time
	packetPath

	abortOnce sync.Once
	abortCh   chan struct{}
	abortErr  error
	done      chan struct{}
	err       error
}

func (ss *ServerSession) abort(err error) {
	ss.abortOnce.Do(func() { ss.abortErr = err; close(ss.abortCh) })
}

// Identity returns what the client proved in IKE phase 1.
func (ss *ServerSession) Identity() ike.Identity { return ss.ps.id }

// IdentityString returns the IKE identity as text (address, FQDN, user
// FQDN or certificate subject).
func (ss *ServerSession) IdentityString() string { return ss.ps.name }

// Username returns the PPP user the client authenticated as.
func (ss *ServerSession) Username() string { return ss.ppp.Info().Username }

// Outer returns the client's current outer address (NAT-T).
func (ss *ServerSession) Outer() netip.AddrPort { return ss.ps.peer.Remote() }

// IPv6Up is closed when IPV6CP has opened with this client (its
// assignment had IPv6); Info then carries both interface identifiers.
func (ss *ServerSession) IPv6Up() <-chan struct{} { return ss.ppp.IPv6Up() }

// Addr returns the IPCP address the client was assigned.
func (ss *ServerSession) Addr() netip.Addr { return ss.ppp.Info().Peer }

// Info returns the negotiated PPP parameters.
func (ss *ServerSession) Info() ppp.Info { return ss.ppp.Info() }

// Suite returns the ESP suite of the pair currently sending to the client.
func (ss *ServerSession) Suite() esp.Suite {
	if sa := ss.ps.peer.Outbound(); sa != nil {
		return sa.Suite()
	}
	return esp.Suite{}
}

// L2TPIDs returns our tunnel and session IDs.
func (ss *ServerSession) L2TPIDs() (tunnel, session uint16) {
	return ss.sess.Tunnel().LocalID(), ss.sess.LocalID()
}

// PeerImplementation is the client's implementation as peerid recognises
// it from its Main Mode vendor IDs and its L2TP Host-Name/Vendor-Name
// AVPs: one of peerid.Kinds.
func (ss *ServerSession) PeerImplementation() string {
	o := peerid.Observations{IKE: ss.ps.peerKind}
	o.L2TPHost, o.L2TPVendor = ss.sess.Tunnel().PeerNames()
	return string(peerid.Classify(o))
}

// Started returns when IPCP opened.
func (ss *ServerSession) Started() time.Time { return ss.started }

// Rekeys returns how many times the IPsec SA pair of this session's peer
// was replaced by a rekey.
func (ss *ServerSession) Rekeys() uint64 { return ss.ps.rekeys.Load() }

// WritePacket sends one IPv4 packet to the client.
func (ss *ServerSession) WritePacket(pkt []byte) error {
	return ss.write(ss.ppp, pkt)
}

// SetPacketHandler sets the function receiving the client's IPv4 packets
// (valid only during the call; must not block).
func (ss *ServerSession) SetPacketHandler(fn func(pkt []byte)) {
	ss.handler.set(fn)
}

// Counters returns the IPv4 packets and bytes received from and sent to
// the client.
func (ss *ServerSession) Counters() (packetsIn, bytesIn, packetsOut, bytesOut uint64) {
	return ss.in.Packets.Load(), ss.in.Bytes.Load(), ss.out.Packets.Load(), ss.out.Bytes.Load()
}

// Done is closed when the session has ended; Err then says why.
func (ss *ServerSession) Done() <-chan struct{} { return ss.done }

// Err returns why the session ended (an *Error), nil while it runs.
func (ss *ServerSession) Err() error {
	select {
	case <-ss.done:
		return ss.err
	default:
		return nil
	}
}

// Close ends the session from our side: PPP Terminate, CDN, and StopCCN
// for its tunnel (the client's LAC holds one session per tunnel). It waits
// until the session is gone, at most about CloseTimeout when the client
// has gone quiet.
func (ss *ServerSession) Close() error {
	s := ss.srv
	polite := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = ss.ppp.Close()
		_ = ss.sess.Close()
		<-ss.done
		close(polite)
		_ = ss.sess.Tunnel().Close() // StopCCN; its ack may never come
	}()
	tm := s.cfg.Clock.NewTimer(CloseTimeout)
	defer tm.Stop()
	select {
	case <-polite:
	case <-tm.C():
		ss.abort(&Error{PhaseNone, ErrClosed})
		<-ss.done
	}
	return nil
}
