package coaptest

import (
	"net"
	"testing"
	"time"

	"github.com/pion/dtls/v3/pkg/protocol"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
	"golang.org/x/sys/unix"
)

// ClientHello is a well-formed DTLS 1.2 ClientHello record as a device
// sends it (PSK CCM_8 and GCM suites, extended master secret, Connection
// ID), with the given random, cookie (nil: the first hello) and
// message_seq (1 for the hello that answers a HelloVerifyRequest).
func ClientHello(t testing.TB, r handshake.Random, cookie []byte, seq uint16) []byte {
	t.Helper()
	rec := recordlayer.RecordLayer{
		Header: recordlayer.Header{Version: protocol.Version1_2, SequenceNumber: uint64(seq)},
		Content: &handshake.Handshake{Header: handshake.Header{MessageSequence: seq}, Message: &handshake.MessageClientHello{
			Version:            protocol.Version1_2,
			Random:             r,
			Cookie:             cookie,
			CipherSuiteIDs:     []uint16{0xc0a8, 0x00a8},
			CompressionMethods: []*protocol.CompressionMethod{{ID: 0}}, // null
			Extensions: []extension.Extension{
				&extension.UseExtendedMasterSecret{Supported: true},
				&extension.ConnectionID{CID: []byte{}},
			},
		}},
	}
	b, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// SpoofedHelloFlood sends n first ClientHellos to "to" at rate per second,
// each from its own source address in 127.16.0.0/12 (IP_PKTINFO picks the
// source per datagram; all of 127/8 is local, so loopback delivers them).
// It closes half when half of them are out (nil: not signalled) and
// returns how many it sent.
func SpoofedHelloFlood(t testing.TB, to *net.UDPAddr, n, rate int, half chan struct{}) int {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Error(err)
		if half != nil {
			close(half)
		}
		return 0
	}
	defer c.Close()
	return HelloFlood(t, c, to, n, rate, half, func(i int) [4]byte {
		src := [4]byte{127, 16 + byte(i>>16), byte(i >> 8), byte(i)}
		if src[3] == 0 || src[3] == 255 {
			src[3] = 1
		}
		return src
	})
}

// HelloFlood is SpoofedHelloFlood over the socket c with the i-th
// datagram's source address from src (given with IP_PKTINFO: a local
// address, or any address if c has IP_TRANSPARENT).
func HelloFlood(t testing.TB, c *net.UDPConn, to *net.UDPAddr, n, rate int, half chan struct{}, src func(i int) [4]byte) int {
	const tick = 10 * time.Millisecond
	signal := func() {
		if half != nil {
			close(half)
			half = nil
		}
	}
	defer signal()
	var r handshake.Random
	if err := r.Populate(); err != nil {
		t.Error(err)
		return 0
	}
	hello := ClientHello(t, r, nil, 0)
	per := max(1, rate*int(tick)/int(time.Second))
	tk := time.NewTicker(tick)
	defer tk.Stop()
	sent := 0
	for sent < n {
		<-tk.C
		for i := 0; i < per && sent < n; i++ {
			a := src(sent)
			oob := unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: a})
			if _, _, err := c.WriteMsgUDP(hello, oob, to); err != nil {
				t.Errorf("flood datagram %d from %v: %v", sent, a, err)
				return sent
			}
			sent++
			if sent == n/2 {
				signal()
			}
		}
	}
	return sent
}
