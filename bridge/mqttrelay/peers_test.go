package mqttrelay

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// mosquittoPeer is the central broker: realpeer's mosquitto on a free
// loopback port with connection messages in its log, deep queues and no
// inflight limit. With a limit mosquitto queues what a subscriber cannot
// take yet and may send a newer message before the queued ones (its
// documentation promises in-order delivery only for a limit of 1), so the
// collectors' order checks would test mosquitto, not the relay. The limit
// also bounds a client's unreleased incoming QoS 2 messages, which the
// relay's window must respect: TestQoS2ReplayWithinBrokerQuota runs
// mosquitto with its default limit for that.
type mosquittoPeer struct {
	*realpeer.Mosquitto
	addr string
}

const mosquittoExtra = "connection_messages true\nmax_inflight_messages 0\nmax_queued_messages 100000\n"

func startMosquitto(t testing.TB) *mosquittoPeer { return startMosquittoTLS(t, nil) }

// startMosquittoTLS starts mosquitto with a TLS listener (server
// certificate from ca) when ca is not nil.
func startMosquittoTLS(t testing.TB, ca *realpeer.TLSCA) *mosquittoPeer {
	t.Helper()
	m := realpeer.StartMosquitto(t, nil, realpeer.MosquittoConfig{TLS: ca != nil, CA: ca, Extra: mosquittoExtra})
	return &mosquittoPeer{Mosquitto: m, addr: m.Addr.String()}
}

// log returns mosquitto's log so far.
func (p *mosquittoPeer) log(testing.TB) string { return p.Proc.Output() }

// connectLines returns mosquitto's "New client connected from A:P as ID"
// lines, as "ID from A".
func (p *mosquittoPeer) connectLines(t testing.TB) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(p.log(t)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		for i := 0; i+5 < len(f); i++ {
			if f[i] == "New" && f[i+1] == "client" && f[i+2] == "connected" && f[i+3] == "from" {
				host, _, _ := net.SplitHostPort(f[i+4])
				if f[i+5] == "as" && i+6 < len(f) {
					out = append(out, f[i+6]+" from "+host)
				}
			}
		}
	}
	return out
}

// gate is a TCP proxy in front of the central broker that the test can
// cut (all connections reset, new ones refused) to simulate a WAN outage
// without root.
type gate struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	open   bool
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newGate(t *testing.T, target string) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, target: target, open: true, conns: make(map[net.Conn]bool)}
	g.wg.Add(1)
	go g.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		g.setOpen(false)
		g.wg.Wait()
	})
	return g
}

func (g *gate) addr() string { return g.ln.Addr().String() }

func (g *gate) accept() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		if !g.open {
			g.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", g.target)
		if err != nil {
			g.mu.Unlock()
			_ = c.Close()
			continue
		}
		g.conns[c], g.conns[up] = true, true
		g.mu.Unlock()
		g.wg.Add(2)
		go g.pipe(c, up)
		go g.pipe(up, c)
	}
}

func (g *gate) pipe(dst, src net.Conn) {
	defer g.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

// setOpen opens or cuts the gate; cutting closes every proxied connection.
func (g *gate) setOpen(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = open
	if !open {
		for c := range g.conns {
			_ = c.Close()
		}
		g.conns = make(map[net.Conn]bool)
	}
}
