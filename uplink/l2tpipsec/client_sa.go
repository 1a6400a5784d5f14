package l2tpipsec

import (
	"errors"
	"fmt"

	"github.com/fleetgate/fleetgate/uplink/esp"
	"github.com/fleetgate/fleetgate/uplink/ike"
)

// onEvent installs and removes ESP SAs as IKE reports them. It runs on
// whichever goroutine drove the engine, after the engine's lock is gone.
func (t *Tunnel) onEvent(ev ike.Event) {
	switch ev.Kind {
	case ike.EventIKEUp:
		t.mu.Lock()
		first := !t.ikeUp
		t.ikeUp = true
		t.mu.Unlock()
		if ev.Peer.Cert != nil {
			t.peerCert.Store(ev.Peer.Cert)
		}
		t.log.Info("IKE SA up", "peer_id", fmt.Sprintf("%v", ev.Peer.ID.Type), "remote", ev.Remote)
		if first {
			close(t.ikeUpCh)
		}
	case ike.EventIKEDown:
		t.mu.Lock()
		wasUp := t.ikeUp
		t.mu.Unlock()
		if !wasUp {
			err := ev.Err
			if err == nil {
				err = ike.ErrTimeout
			}
			t.fail(PhaseIKE, err)
			return
		}
		// IKEv1 IPsec SAs outlive their ISAKMP SA; losing the last child
		// is what ends the tunnel.
		t.log.Info("IKE SA down", "reason", ev.Err)
	case ike.EventChildInbound:
		t.installInbound(ev.Child)
	case ike.EventChildUp, ike.EventChildRekeyed:
		t.install(ev.Child, ev.Kind == ike.EventChildRekeyed)
	case ike.EventChildDown:
		t.remove(ev.Child, ev.Err)
	case ike.EventChildFailed:
		t.mu.Lock()
		up := t.childUp
		t.mu.Unlock()
		if !up {
			// Our first Quick Mode failed (the gateway's notify or IKE's
			// retransmissions gave up): no point waiting QuickModeTimeout.
			err := ev.Err
			if err == nil {
				err = ErrSetupTimeout
			}
			t.fail(PhaseQuickMode, err)
			return
		}
		// A failed rekey leaves the old pair until it expires (IKE retries).
		t.log.Warn("IPsec rekey failed", "reason", ev.Err)
	}
}

// installInbound installs the inbound SA of a Quick Mode we answer (the
// gateway rekeys, or SoftEther starts its own) as HASH(2) leaves: the
// gateway may send on it right after its HASH(3), which can overtake that
// message here (RFC 2409 §5.5). The pair becomes current on ChildUp or
// ChildRekeyed.
func (t *Tunnel) installInbound(c *ike.ChildSA) {
	in, out, err := newPair(c, t.eng, &t.esp)
	if err != nil {
		t.log.Warn("cannot make ESP SAs", "spi_in", fmt.Sprintf("%08x", c.InSPI), "err", err)
		return
	}
	t.mu.Lock()
	if t.peer == nil {
		t.peer, err = t.tr.NewPeer(t.peerConfig(c))
	}
	if err == nil {
		// out sends from the gateway's first packet on in, or from ChildUp.
		err = t.tr.AddInbound(t.peer, in, out)
	}
	if err == nil {
		t.pending[c] = espPair{in, out}
	}
	t.mu.Unlock()
	if err != nil {
		t.log.Warn("cannot install inbound ESP SA", "spi_in", fmt.Sprintf("%08x", c.InSPI), "err", err)
	}
}

func (t *Tunnel) peerConfig(c *ike.ChildSA) esp.PeerConfig {
	return esp.PeerConfig{Remote: c.Remote, LocalPort: L2TPPort, Keepalive: t.cfg.KeepaliveInterval >= 0, Name: "gateway"}
}

// install makes a child's pair current: its inbound SA (installed already
// if we answered the Quick Mode) and, at once, its outbound SA. When we
// sent HASH(3) the gateway had installed its inbound SA before its HASH(2),
// so nothing we send on the new SPI is lost; the older inbound SAs keep
// decrypting for the grace period, until IKE's ChildDown for them.
func (t *Tunnel) install(c *ike.ChildSA, rekey bool) {
	t.mu.Lock()
	pair, ok := t.pending[c]
	delete(t.pending, c)
	t.mu.Unlock()
	var err error
	if !ok {
		if pair.in, pair.out, err = newPair(c, t.eng, &t.esp); err != nil {
			t.fail(PhaseQuickMode, err)
			return
		}
	}
	t.mu.Lock()
	if t.peer == nil {
		t.peer, err = t.tr.AddSA(pair.in, pair.out, t.peerConfig(c))
	} else {
		err = t.tr.Activate(t.peer, pair.in, pair.out)
	}
	if err == nil {
		t.children[c.InSPI] = c
		t.current = c
	}
	first := !t.childUp && err == nil
	t.childUp = t.childUp || err == nil
	t.mu.Unlock()
	if err != nil {
		t.fail(PhaseQuickMode, err)
		return
	}
	logKeys(t.cfg.KeyLog, c)
	t.log.Info("IPsec SA installed", "suite", c.Suite, "spi_in", fmt.Sprintf("%08x", c.InSPI), "spi_out", fmt.Sprintf("%08x", c.OutSPI), "rekey", rekey)
	if first {
		close(t.childUpCh)
	}
}

func (t *Tunnel) remove(c *ike.ChildSA, why error) {
	t.tr.RemovePair(c.InSPI, c.OutSPI)
	t.mu.Lock()
	delete(t.pending, c)
	delete(t.children, c.InSPI)
	var heir *ike.ChildSA
	for _, o := range t.children {
		if heir == nil || o.Established.After(heir.Established) {
			heir = o
		}
	}
	noOut := t.peer != nil && t.peer.Outbound() == nil
	if t.current == c {
		t.current = heir
	}
	up := t.childUp
	t.mu.Unlock()
	t.log.Info("IPsec SA removed", "spi_in", fmt.Sprintf("%08x", c.InSPI), "reason", why)
	switch {
	case heir == nil && up:
		if why == nil {
			why = errors.New("removed")
		}
		t.fail(PhaseIPsec, fmt.Errorf("%w: %w", ErrIPsecLost, why))
	case heir != nil && noOut:
		// The pair that was sending went, an older one remains: ask for a
		// fresh pair rather than reuse sequence numbers.
		go t.eng.RekeyChild(heir.InSPI)
	}
}
