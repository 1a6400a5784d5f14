package tunnel

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

func (t *Tunnel) install(c *ike.ChildSA, rekey bool) {
	in, out, err := newPair(c, t.eng, &t.esp)
	if err != nil {
		t.fail(PhaseQuickMode, err)
		return
	}
	t.mu.Lock()
	if t.peer == nil {
		t.peer, err = t.tr.AddSA(in, out, esp.PeerConfig{
			Remote: c.Remote, LocalPort: L2TPPort, Keepalive: t.cfg.KeepaliveInterval >= 0, Name: "gateway",
		})
	} else if cur := t.peer.Outbound(); c.Role == ike.RoleInitiator && cur != nil {
		// We sent the third message: keep sending on the old SA until the
		// peer has surely installed the new one (outboundSwitchDelay).
		if err = t.tr.Rekey(t.peer, in, cur); err == nil {
			t.switchLater(c, out)
		}
	} else {
		// A rekey the peer started, or a second Quick Mode it started
		// itself (SoftEther does, with 0.0.0.0/0 selectors): the peer has
		// the keys already, the newest pair sends at once.
		err = t.tr.Rekey(t.peer, in, out)
	}
	if err == nil {
		t.children[c.InSPI] = c
		if t.peer.Outbound() == out {
			t.current = c
		}
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

// switchLater makes out the sending SA after outboundSwitchDelay, if its
// child is still installed by then.
func (t *Tunnel) switchLater(c *ike.ChildSA, out *esp.SA) {
	tm := t.cfg.Clock.NewTimer(outboundSwitchDelay)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		select {
		case <-tm.C():
		case <-t.stop:
			tm.Stop()
			return
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.children[c.InSPI] != c || t.peer == nil {
			return
		}
		if err := switchOutbound(t.tr, t.peer, out); err != nil {
			t.log.Warn("cannot switch to the new outbound SA", "spi_out", fmt.Sprintf("%08x", c.OutSPI), "err", err)
			return
		}
		t.current = c
	}()
}

func (t *Tunnel) remove(c *ike.ChildSA, why error) {
	t.tr.RemovePair(c.InSPI, c.OutSPI)
	t.mu.Lock()
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
