package mqttrelay

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/bridge/spool"
	mqtt "github.com/fleetgate/fleetgate/downlink/mqtt"
	"github.com/fleetgate/fleetgate/internal/realpeer"
)

// TestFairSpoolUnderFlood (issue 18): during a WAN outage one device
// floods 4 KB QoS 1 messages into the relay until its own share of the
// spool is full (then it is refused: PUBACK 0x97 / no acknowledgement);
// two other devices keep publishing QoS 1 throughout, every one of their
// messages is accepted, and after the outage every one reaches central.
// Bound held: the flood's live bytes ≤ its share (64 KiB of 512 KiB).
func TestFairSpoolUnderFlood(t *testing.T) {
	central := startMosquitto(t)
	wan := newGate(t, central.addr)
	col := startCollector(t, central.addr)
	port := realpeer.FreePort(t)
	const max, share = 512 << 10, 64 << 10
	cfg := siteConfig{
		spoolDir: t.TempDir(), central: wan.addr(), plainAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		spoolMax: max, spoolShare: share, passwords: map[string]string{"sensor-1": "p", "sensor-2": "p", "sensor-3": "p"},
	}
	st := startSite(t, cfg)
	wan.setOpen(false)
	quiet := []*simDevice{
		startDevice(t, cfg.plainAddr, "sensor-2", "p", 1, 10*time.Millisecond),
		startDevice(t, cfg.plainAddr, "sensor-3", "p", 1, 10*time.Millisecond),
	}
	big := strings.Repeat("x", 4000)
	var accepted, refused int
	deadline := time.Now().Add(3 * time.Second)
	for i := 1; time.Now().Before(deadline); i++ {
		err := st.relay.Publish("sensor-1", mqtt.Message{Topic: "telemetry/seq", QoS: 1, Payload: []byte(fmt.Sprintf("sensor-1 %d %s", i, big))})
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, spool.ErrShareFull):
			refused++
		default:
			t.Fatalf("flood publish %d: %v", i, err)
		}
		time.Sleep(time.Millisecond)
	}
	_, floodBytes, _ := st.sp.Depth("sensor-1")
	for _, d := range quiet {
		d.halt()
	}
	others := st.relay.Stats().SpoolRefused.Load() - uint64(refused)
	t.Logf("flood: %d accepted (%d bytes queued, share %d), %d refused; others refused %d; quiet devices acked %d and %d",
		accepted, floodBytes, share, refused, others, quiet[0].acked.Load(), quiet[1].acked.Load())
	if refused == 0 || floodBytes > share {
		t.Fatalf("flood not bounded by its share: refused %d, %d bytes", refused, floodBytes)
	}
	if others != 0 {
		t.Fatalf("%d publishes of the other devices refused during the flood", others)
	}
	wan.setOpen(true)
	waitFor(t, 60*time.Second, "spool drained", func() bool { return st.sp.Stats().Queued.Load() == 0 })
	for _, d := range quiet {
		acked := d.acked.Load()
		if acked < 50 {
			t.Fatalf("%s acked only %d: the device did not run", d.ep, acked)
		}
		waitFor(t, 30*time.Second, d.ep+" delivered", func() bool {
			s := col.seqs(d.ep)
			return len(s) > 0 && maxSeq(s) >= acked
		})
		seen := map[int64]bool{}
		for _, s := range col.seqs(d.ep) {
			seen[s] = true
		}
		for s := int64(1); s <= acked; s++ {
			if !seen[s] {
				t.Errorf("%s: acknowledged message %d missing at central", d.ep, s)
			}
		}
	}
}
