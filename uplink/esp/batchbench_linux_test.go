//go:build linux

package esp

import (
	"net"
	"testing"
)

// BenchmarkBatchWrite measures the send half alone: 32 datagrams of 1400
// bytes to one destination per call, with UDP GSO (one message) and
// without (32 messages in one sendmmsg), against a socket that drains its
// queue in the background.
func BenchmarkBatchWrite(b *testing.B) {
	for _, gso := range []bool{true, false} {
		name := "gso"
		if !gso {
			name = "sendmmsg"
		}
		b.Run(name, func(b *testing.B) {
			rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer rx.Close()
			_ = rx.SetReadBuffer(4 << 20)
			rb := newBatchConn(rx)
			go func() {
				for {
					if _, err := rb.read(); err != nil {
						return
					}
				}
			}()
			tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer tx.Close()
			tb := newBatchConn(tx)
			tb.noGSO = tb.noGSO || !gso
			to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
			pkts := make([]outPkt, batchLen)
			for i := range pkts {
				pkts[i] = pkt(1400, byte(i), to)
			}
			b.SetBytes(1400 * batchLen)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				if _, err := tb.write(pkts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*batchLen), "cpu-ns/pkt")
		})
	}
}
