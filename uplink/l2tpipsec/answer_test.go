package l2tpipsec_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/uplink/ike"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec"
	"github.com/fleetgate/fleetgate/uplink/l2tpipsec/l2tpipsectest"
)

// TestAnswerTimeout: a gateway that sends nothing ends phase 1 after
// AnswerTimeout (ike.ErrTimeout in PhaseIKE), long before the attempt's
// deadline; a gateway that answers is unaffected.
func TestAnswerTimeout(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0") // a dead gateway: reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err = l2tpipsec.Dial(ctx, l2tpipsec.ClientConfig{
		Gateway: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), NATTPort: uint16(port),
		PSK: []byte("psk"), Username: "u", Password: "p", AnswerTimeout: 300 * time.Millisecond,
	})
	took := time.Since(start)
	if err == nil || l2tpipsec.PhaseOf(err) != l2tpipsec.PhaseIKE || !errors.Is(err, ike.ErrTimeout) || ctx.Err() != nil {
		t.Fatalf("Dial to a silent gateway: %v (phase %v) after %v, want ike.ErrTimeout in phase 1 before the 30 s deadline", err, l2tpipsec.PhaseOf(err), took)
	}
	t.Logf("silent gateway given up after %v: %v", took.Round(time.Millisecond), err)

	if _, err := l2tpipsectest.Start(t, l2tpipsectest.Options{Client: func(c *l2tpipsec.ClientConfig) { c.AnswerTimeout = 5 * time.Second }}); err != nil {
		t.Fatalf("Dial with AnswerTimeout to a live gateway: %v", err)
	}
}
