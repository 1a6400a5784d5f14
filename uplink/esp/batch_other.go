//go:build !linux

package esp

import (
	"errors"
	"net"
	"net/netip"
)

// batchConn is Linux-only (recvmmsg/sendmmsg); elsewhere sockets are read
// and written one datagram at a time.
type batchConn struct{}

const batchLen = 32

var errNoBatch = errors.New("esp: batched I/O not supported")

func newBatchConn(*net.UDPConn) *batchConn { return nil }

func (*batchConn) read() (int, error) { return 0, errNoBatch }

func (*batchConn) enableGRO() bool { return false }

func (*batchConn) release() {}

func (*batchConn) coalescedCount() int { return 0 }

func (*batchConn) msg(int) ([]byte, netip.AddrPort, bool, error) {
	return nil, netip.AddrPort{}, false, errNoBatch
}

func (*batchConn) write([]outPkt) (int, error) { return 0, errNoBatch }
