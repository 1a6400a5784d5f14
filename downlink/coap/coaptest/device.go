// Package coaptest provides simulated DTLS/CoAP devices for tests: a pion
// DTLS client (PSK or certificate, chosen suites, Connection ID) over a UDP
// socket whose source port can be changed mid-session to imitate NAT
// rebinding.
package coaptest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// Device is a simulated DTLS/CoAP device.
type Device struct {
	// Conn is the device's CoAP connection to the bridge.
	Conn *udpclient.Conn
	// DTLS is the underlying DTLS connection.
	DTLS *dtls.Conn
	// Sock is the rebindable socket under DTLS.
	Sock *RebindConn
}

// Options select the device's credentials.
type Options struct {
	// Identity and Key for PSK.
	Identity string
	Key      []byte
	// Cert (with RootCAs to verify the bridge) for certificates.
	Cert    *tls.Certificate
	RootCAs *x509.CertPool
	// Suites offered; PSK CCM_8 + GCM or ECDSA CCM_8 + GCM by default.
	Suites []dtls.CipherSuiteID
	// Handler serves requests the bridge sends to the device (central →
	// device); nil answers 4.04.
	Handler udpclient.HandlerFunc
}

// Dial connects a device to the bridge at addr and completes the handshake.
// The device is closed by t.Cleanup.
func Dial(t testing.TB, addr string, o Options) (*Device, error) {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	sock, err := NewRebindConn()
	if err != nil {
		return nil, err
	}
	opts := []dtls.ClientOption{
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
		dtls.WithFlightInterval(200 * time.Millisecond),
	}
	if o.Cert != nil {
		suites := o.Suites
		if suites == nil {
			suites = []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
		}
		opts = append(opts, dtls.WithCertificates(*o.Cert), dtls.WithRootCAs(o.RootCAs), dtls.WithServerName("bridge"), dtls.WithCipherSuites(suites...))
	} else {
		suites := o.Suites
		if suites == nil {
			suites = []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256}
		}
		key := o.Key
		opts = append(opts, dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
			dtls.WithPSKIdentityHint([]byte(o.Identity)), dtls.WithCipherSuites(suites...))
	}
	dc, err := dtls.ClientWithOptions(sock, raddr, opts...)
	if err != nil {
		sock.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := dc.HandshakeContext(ctx); err != nil {
		dc.Close()
		sock.Close()
		return nil, err
	}
	uopts := []udp.Option{options.WithBlockwise(true, blockwise.SZX1024, time.Minute)}
	if o.Handler != nil {
		uopts = append(uopts, options.WithHandlerFunc(o.Handler))
	}
	cc := coapdtls.Client(dc, uopts...)
	d := &Device{Conn: cc, DTLS: dc, Sock: sock}
	t.Cleanup(func() {
		_ = cc.Close()
		sock.Close() // unblocks pion's read so the conn can finish
		<-cc.Done()
	})
	return d, nil
}

// RebindConn is a net.PacketConn on 127.0.0.1 whose local port can be
// changed with Rebind while a DTLS session runs over it.
type RebindConn struct {
	in   chan pkt
	done chan struct{}

	mu     sync.Mutex
	cur    *net.UDPConn   // guarded by mu
	all    []*net.UDPConn // guarded by mu
	closed bool           // guarded by mu
	wg     sync.WaitGroup

	dl   sync.Mutex
	rdl  time.Time // guarded by dl
	rdlc chan struct{}
}

type pkt struct {
	b    []byte
	from net.Addr
}

// NewRebindConn opens the first socket.
func NewRebindConn() (*RebindConn, error) {
	r := &RebindConn{in: make(chan pkt, 256), done: make(chan struct{}), rdlc: make(chan struct{})}
	if err := r.Rebind(); err != nil {
		return nil, err
	}
	return r, nil
}

// Rebind switches to a fresh socket (new source port); datagrams to the
// old port are still read until Close.
func (r *RebindConn) Rebind() error {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		c.Close()
		return net.ErrClosed
	}
	r.cur = c
	r.all = append(r.all, c)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			b := make([]byte, 2048)
			n, from, err := c.ReadFrom(b)
			if err != nil {
				return
			}
			select {
			case r.in <- pkt{b[:n], from}:
			case <-r.done:
				return
			}
		}
	}()
	return nil
}

// ReadFrom implements net.PacketConn.
func (r *RebindConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		r.dl.Lock()
		dl, ch := r.rdl, r.rdlc
		r.dl.Unlock()
		var timer <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, timeoutErr{}
			}
			tm := time.NewTimer(d)
			timer = tm.C
			defer tm.Stop()
		}
		select {
		case p := <-r.in:
			return copy(b, p.b), p.from, nil
		case <-r.done:
			return 0, nil, net.ErrClosed
		case <-timer:
			return 0, nil, timeoutErr{}
		case <-ch:
			// deadline changed: re-evaluate it
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// WriteTo implements net.PacketConn (always from the current socket).
func (r *RebindConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	r.mu.Lock()
	c := r.cur
	r.mu.Unlock()
	return c.WriteTo(b, addr)
}

// LocalAddr returns the current socket's address.
func (r *RebindConn) LocalAddr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur.LocalAddr()
}

// Close closes every socket.
func (r *RebindConn) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.done)
	for _, c := range r.all {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}

// SetDeadline sets the read deadline (writes never block).
func (r *RebindConn) SetDeadline(t time.Time) error { return r.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn; it interrupts a blocked read.
func (r *RebindConn) SetReadDeadline(t time.Time) error {
	r.dl.Lock()
	r.rdl = t
	close(r.rdlc)
	r.rdlc = make(chan struct{})
	r.dl.Unlock()
	return nil
}

// SetWriteDeadline implements net.PacketConn (no-op).
func (r *RebindConn) SetWriteDeadline(time.Time) error { return nil }
