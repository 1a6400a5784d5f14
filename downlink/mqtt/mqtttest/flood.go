// Package mqtttest holds an attacking MQTT device for the bridge's bounded
// attack tests and benchmarks (issue 18): raw MQTT 3.1.1/5 packets encoded
// with mochi's packets package over TLS, so a test can send what no
// well-behaved client library would (topic aliases past the maximum, 20 KB
// topics, thousands of filters, connections that never send CONNECT).
package mqtttest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Device is an authenticated device: client ID Name (the endpoint name),
// Username (Name if empty) and Password.
type Device struct {
	Name, Username, Password string
	// DialContext opens the TCP connection (e.g. inside a network
	// namespace); nil uses net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (d Device) dialTLS(addr string) (net.Conn, error) {
	dial := d.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true}) // the attacker does not care
	if err := c.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, err
	}
	return c, nil
}

// Dial logs d in over TLS with MQTT version v (4 or 5) and waits for the
// CONNACK. The attacker does not verify the broker's certificate.
func (d Device) Dial(t testing.TB, addr string, v byte) net.Conn {
	t.Helper()
	conn, err := d.dialTLS(addr)
	if err != nil {
		t.Fatal(err)
	}
	user := d.Username
	if user == "" {
		user = d.Name
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60,
			ClientIdentifier: d.Name, UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(d.Password)}}
	var b bytes.Buffer
	if err := pk.ConnectEncode(&b); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	// CONNACK: type, remaining length (MQTT 5 adds properties), body;
	// read unbuffered so nothing after it is consumed here.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	one := make([]byte, 1)
	if _, err := io.ReadFull(conn, one); err != nil || one[0] != 0x20 {
		t.Fatalf("CONNACK: % x %v", one, err)
	}
	n, mul := 0, 1
	for {
		if _, err := io.ReadFull(conn, one); err != nil {
			t.Fatalf("CONNACK length: %v", err)
		}
		n += int(one[0]&0x7f) * mul
		mul <<= 7
		if one[0]&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(conn, body); err != nil || n < 2 || body[1] != 0 {
		t.Fatalf("CONNACK: % x %v", body, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return conn
}

// drain reads the broker's packets until the connection ends, signalling
// each PINGRESP on pong.
func drain(conn net.Conn, pong chan<- struct{}) {
	r := bufio.NewReader(conn)
	for {
		typ, err := r.ReadByte()
		if err != nil {
			return
		}
		n, mul := 0, 1
		for {
			c, err := r.ReadByte()
			if err != nil {
				return
			}
			n += int(c&0x7f) * mul
			mul <<= 7
			if c&0x80 == 0 {
				break
			}
		}
		if _, err := r.Discard(n); err != nil {
			return
		}
		if typ == 0xd0 {
			select {
			case pong <- struct{}{}:
			default:
			}
		}
	}
}

// Flood keeps d sending the packets next returns (PUBLISH or SUBSCRIBE),
// reconnecting when the broker hangs up, until n went out; at the end a
// PINGREQ answered shows the broker handled what came before (or the
// broker hung up).
func (d Device) Flood(t testing.TB, addr string, v byte, n int, next func(i int) packets.Packet) (sent, reconnects int) {
	pong := make(chan struct{}, 1)
	var gone chan struct{} // closed when the current connection ends
	dial := func() net.Conn {
		c := d.Dial(t, addr, v)
		g := make(chan struct{})
		gone = g
		go func() { drain(c, pong); close(g) }()
		return c
	}
	conn := dial()
	defer func() { _ = conn.Close() }()
	defer func() {
		if _, err := conn.Write([]byte{0xc0, 0}); err != nil {
			return
		}
		select {
		case <-pong:
		case <-gone: // the broker hung up on the last packet
		case <-time.After(20 * time.Second):
			t.Errorf("mqtttest: no PINGRESP 20 s after the flood")
		}
	}()
	var b bytes.Buffer
	for sent < n {
		pk := next(sent)
		pk.ProtocolVersion = v
		b.Reset()
		var err error
		switch pk.FixedHeader.Type {
		case packets.Publish:
			err = pk.PublishEncode(&b)
		case packets.Subscribe:
			err = pk.SubscribeEncode(&b)
		default:
			err = fmt.Errorf("mqtttest: cannot flood packet type %d", pk.FixedHeader.Type)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(b.Bytes()); err != nil {
			_ = conn.Close()
			conn = dial()
			reconnects++
			continue
		}
		sent++
	}
	return sent, reconnects
}

// Publish is a QoS 0 PUBLISH, with an MQTT 5 topic alias if alias > 0.
func Publish(topic string, payload []byte, retain bool, alias uint16) packets.Packet {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: retain}, TopicName: topic, Payload: payload}
	if alias > 0 {
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = alias, true
	}
	return pk
}

// The device floods; each returns a description of what it sent.

// Aliases: MQTT 5 publishes setting topic aliases 1..n, 200-byte topics.
func (d Device) Aliases(t testing.TB, addr string, n int) string {
	sent, rc := d.Flood(t, addr, 5, n, func(i int) packets.Packet {
		return Publish(fmt.Sprintf("telemetry/a/%0200d", i), []byte("x"), false, uint16(1+i%65535))
	})
	return fmt.Sprintf("%d MQTT 5 publishes setting topic aliases 1..%d (200-byte topics), %d reconnects", sent, n, rc)
}

// LongTopics: the 20 KB topics, with aliases 1..8.
func (d Device) LongTopics(t testing.TB, addr string, n int) string {
	long := "telemetry/" + strings.Repeat("t", 20<<10)
	sent, rc := d.Flood(t, addr, 5, n, func(i int) packets.Packet {
		return Publish(long+strconv.Itoa(i), []byte("x"), false, uint16(1+i%8))
	})
	return fmt.Sprintf("%d publishes with 20 KB topics and aliases, %d reconnects", sent, rc)
}

// Retained: n retained publishes of size bytes on distinct topics.
func (d Device) Retained(t testing.TB, addr string, n, size int) string {
	payload := bytes.Repeat([]byte("r"), size)
	sent, rc := d.Flood(t, addr, 4, n, func(i int) packets.Packet {
		return Publish(fmt.Sprintf("telemetry/r/%d", i), payload, true, 0)
	})
	return fmt.Sprintf("%d retained %d KB publishes on distinct topics, %d reconnects", sent, size>>10, rc)
}

// Subscriptions: n SUBSCRIBEs of 100 distinct filters each.
func (d Device) Subscriptions(t testing.TB, addr string, n int) string {
	sent, rc := d.Flood(t, addr, 5, n, func(i int) packets.Packet {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: uint16(i + 1)}
		for j := 0; j < 100; j++ {
			pk.Filters = append(pk.Filters, packets.Subscription{Filter: fmt.Sprintf("cmd/s/%d/%d", i, j), Qos: 1})
		}
		return pk
	})
	return fmt.Sprintf("%d distinct filters in %d SUBSCRIBEs, %d reconnects", sent*100, sent, rc)
}

// IdleConnections opens n TLS connections that never send CONNECT, 8 per
// source address in 127.1.0.0/16, holds them until the returned func is
// called, and reports how many completed the TLS handshake.
func IdleConnections(t testing.TB, addr string, n int) (string, func()) {
	return idleConnections(t, addr, n, (n+7)/8, func(i int) (net.Conn, error) {
		src := &net.TCPAddr{IP: net.IPv4(127, 1, byte(i/8/250), byte(1+i/8%250))}
		return tls.DialWithDialer(&net.Dialer{LocalAddr: src, Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	})
}

// IdleConnectionsFrom is IdleConnections from one source: d's dialer.
func (d Device) IdleConnectionsFrom(t testing.TB, addr string, n int) (string, func()) {
	return idleConnections(t, addr, n, 1, func(int) (net.Conn, error) { return d.dialTLS(addr) })
}

func idleConnections(t testing.TB, addr string, n, sources int, dial func(i int) (net.Conn, error)) (string, func()) {
	var (
		mu    sync.Mutex
		conns []net.Conn
		ok    atomic.Int64
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, 32)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			c, err := dial(i)
			if err != nil {
				return // refused: closed by the broker during the handshake
			}
			ok.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	return fmt.Sprintf("%d TLS connections without CONNECT from %d sources, %d completed the TLS handshake", n, sources, ok.Load()), func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	}
}
