package dataplane

import (
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/fleetgate/fleetgate/ipstack"
)

// UserspaceConfig configures NewUserspace.
type UserspaceConfig struct {
	// Addrs are the central addresses held in the process (e.g.
	// 10.20.0.10/32 for an in-process MQTT broker, or an IPv6 one such as
	// 2001:db8:200::10/128 for sites with an IPv6 prefix). Services listen
	// on them through Stack().
	Addrs []netip.Prefix
	// MTU of the userspace NIC (default 1500).
	MTU int
	// Queue is how many packets from the stack may wait for the router
	// (default 1024); beyond that they are dropped and counted.
	Queue  int
	Logger *slog.Logger
}

// Userspace is a Host backed by the gVisor netstack (package ipstack): the
// central network lives inside the process, so the gateway runs without
// root or TUN.
type Userspace struct {
	st   *ipstack.Stack
	out  chan []byte
	done chan struct{}
	once sync.Once
	mtu  int
	// Dropped counts packets from the stack lost to a full queue.
	Dropped atomic.Uint64
}

// ErrClosed is returned by a closed host.
var ErrClosed = errors.New("dataplane: host closed")

// NewUserspace starts a userspace stack holding cfg.Addrs.
func NewUserspace(cfg UserspaceConfig) (*Userspace, error) {
	if cfg.MTU == 0 {
		cfg.MTU = 1500
	}
	if cfg.Queue == 0 {
		cfg.Queue = 1024
	}
	u := &Userspace{out: make(chan []byte, cfg.Queue), done: make(chan struct{}), mtu: cfg.MTU}
	st, err := ipstack.New(ipstack.Config{MTU: cfg.MTU, Logger: cfg.Logger, Output: u.output})
	if err != nil {
		return nil, err
	}
	u.st = st
	for _, a := range cfg.Addrs {
		if err := st.AddAddress(a); err != nil {
			st.Close()
			return nil, err
		}
	}
	return u, nil
}

// output is the stack's send path: it must not block nor inject back
// synchronously, so it queues a copy for RunHost.
func (u *Userspace) output(pkt []byte) error {
	c := append([]byte(nil), pkt...)
	select {
	case u.out <- c:
		return nil
	default:
		u.Dropped.Add(1)
		return errors.New("dataplane: userspace queue full")
	}
}

// Stack is the userspace stack, for in-process central services.
func (u *Userspace) Stack() *ipstack.Stack { return u.st }

// WritePacket injects a packet into the stack.
func (u *Userspace) WritePacket(pkt []byte) error { return u.st.InjectInbound(pkt) }

// ReadPacket returns the next packet the stack sent.
func (u *Userspace) ReadPacket(buf []byte) (int, error) {
	select {
	case p := <-u.out:
		return copy(buf, p), nil
	case <-u.done:
		return 0, ErrClosed
	}
}

// MTU is the NIC MTU.
func (u *Userspace) MTU() int { return u.mtu }

// Close stops the stack.
func (u *Userspace) Close() error {
	u.once.Do(func() {
		close(u.done)
		u.st.Close()
	})
	return nil
}
