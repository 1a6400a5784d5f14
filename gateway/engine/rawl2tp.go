package engine

import (
	"context"
	"errors"
	"fmt"
	"github.com/fleetgate/fleetgate/uplink/peerid"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/fleetgate/fleetgate/gateway/server"
	"github.com/fleetgate/fleetgate/uplink/l2tp"
	"github.com/fleetgate/fleetgate/uplink/ppp"
)

// rawListener is an L2TP LNS on a plain UDP socket (RFC 2661 without the
// RFC 3193 IPsec protection): for peers that bring their own IPsec and for
// testing stock LACs such as xl2tpd. Each accepted session runs a PPP
// server and, once IPCP opens, becomes a gateway Session like any other.
type rawListener struct {
	conn   net.PacketConn
	ep     *l2tp.Endpoint
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (l *rawListener) addr() netip.AddrPort {
	ap, _ := netip.ParseAddrPort(l.conn.LocalAddr().String())
	return ap
}

func (l *rawListener) close() {
	l.cancel()
	_ = l.ep.Close() // StopCCN to every tunnel
	l.wg.Wait()
}

func (e *Engine) startRaw(env *server.Env, log *slog.Logger, at netip.AddrPort, mux *authMux, stopping <-chan struct{}, _ *sync.WaitGroup) (*rawListener, error) {
	conn := e.cfg.RawL2TPConn
	if conn == nil {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(at))
		if err != nil {
			return nil, fmt.Errorf("%w: raw L2TP %v: %w", ErrListen, at, err)
		}
		conn = c
	}
	log = log.With("listener", "raw_l2tp")
	ep, err := l2tp.Listen(conn, l2tp.Config{HostName: "fleetgate", Clock: e.cfg.Clock, Logger: log, Stats: &e.raw2})
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("engine: raw L2TP: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &rawListener{conn: conn, ep: ep, cancel: cancel}
	gc := env.Config()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		echoInterval, echoFailures := e.echo(gc)
		for {
			sess, err := ep.Accept(ctx)
			if err != nil {
				return
			}
			e.stats.RawL2TPSessions.Add(1)
			peer, _ := netip.ParseAddrPort(sess.Tunnel().PeerAddr().String())
			log.Info("raw L2TP session established", "peer", peer, "tunnel_id", sess.Tunnel().LocalID(), "session_id", sess.LocalID())
			// Hold what the LAC sends from IPCP up until registration
			// (the handler is in place before PPP sees the first frame).
			hold := newInbox(&e.stats)
			pc := ppp.Attach(sess, ppp.Config{
				Role: ppp.Server, MRU: gc.MTU, Name: "fleetgate",
				Authenticator: rawAuth{mux, peer.String()}, AssignAddress: mux.Assign, LocalAddr: gc.Pool.GatewayAddr,
				EchoInterval: echoInterval, EchoFailures: echoFailures,
				Clock: e.cfg.Clock, Logger: log.With("layer", "ppp"), PacketHandler: hold.deliver,
			})
			rl := &rawLink{sess: sess, ppp: pc, peer: peer}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				select {
				case <-pc.Up():
				case <-pc.Done():
					hold.close()
					_ = sess.Close()
					return
				case <-sess.Done():
					hold.close()
					pc.LowerDown()
					return
				}
				p := mux.claim(pc.Info().Peer)
				if p == nil {
					hold.close()
					_ = rl.Close()
					return
				}
				s := &Session{
					id: p.id, identity: p.auth.Identity(), routes: p.auth.Routes(),
					mtu: gc.MTU, suite: "none", outer: func() netip.AddrPort { return peer },
					started: e.cfg.Clock.Now(), user: p.auth.PPPUser(), class: p.auth.Class(), link: rl, hold: hold,
					phase1: server.Phase1{None: true},
				}
				e.serve(env, log, s, stopping)
			}()
		}
	}()
	return l, nil
}

// rawLink is a PPP link over a raw L2TP session.
type rawLink struct {
	sess *l2tp.Session
	ppp  *ppp.Conn
	peer netip.AddrPort

	once sync.Once
	done chan struct{}
}

func (r *rawLink) Addr() netip.Addr                   { return r.ppp.Info().Peer }
func (r *rawLink) WritePacket(pkt []byte) error       { return r.ppp.WritePacket(pkt) }
func (r *rawLink) SetPacketHandler(fn func(p []byte)) { r.ppp.SetPacketHandler(fn) }

// Done is closed when either the PPP link or the L2TP session ended.
func (r *rawLink) Done() <-chan struct{} {
	r.once.Do(func() {
		r.done = make(chan struct{})
		go func() {
			select {
			case <-r.ppp.Done():
			case <-r.sess.Done():
				r.ppp.LowerDown()
			}
			close(r.done)
		}()
	})
	return r.done
}

func (r *rawLink) Err() error {
	if err := r.ppp.Err(); err != nil && !errors.Is(err, ppp.ErrLinkDown) {
		return err
	}
	return r.sess.Err()
}

func (r *rawLink) Close() error {
	_ = r.ppp.Close()
	err := r.sess.Close()
	_ = r.sess.Tunnel().Close()
	return err
}

// PeerImplementation is the LAC's implementation as its L2TP Host-Name and
// Vendor-Name AVPs name it (no IPsec here): one of peerid.Kinds.
func (l *rawLink) PeerImplementation() string {
	host, vendor := l.sess.Tunnel().PeerNames()
	return string(peerid.Classify(peerid.Observations{L2TPHost: host, L2TPVendor: vendor}))
}
