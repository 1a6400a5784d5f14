package realpeer

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/netns"
)

// TestMosquittoPubSub: mosquitto_pub -> mosquitto -> mosquitto_sub, plain
// in the root namespace, and over TLS with passwords across two hosts.
func TestMosquittoPubSub(t *testing.T) {
	t.Run("plain-root-namespace", func(t *testing.T) {
		m := StartMosquitto(t, nil, MosquittoConfig{})
		sub := m.Subscribe(t, nil, "fleet/#", "-q", "1")
		m.Pub(t, nil, "fleet/dev1/temp", "21.5", "-q", "1")
		if got, want := sub.Wait(t, 1, 5*time.Second), []string{"fleet/dev1/temp 21.5"}; !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("tls-users-two-hosts", func(t *testing.T) {
		p := netns.Pair(t)
		a, b := p.Host("a"), p.Host("b")
		m := StartMosquitto(t, b, MosquittoConfig{TLS: true, Users: map[string]string{"site1": "pw1"}})
		auth := []string{"-u", "site1", "-P", "pw1"}
		sub := m.Subscribe(t, b, "fleet/+/temp", auth...)
		for i := range 3 {
			m.Pub(t, a, fmt.Sprintf("fleet/dev%d/temp", i), fmt.Sprint(20+i), auth...)
		}
		want := []string{"fleet/dev0/temp 20", "fleet/dev1/temp 21", "fleet/dev2/temp 22"}
		if got := sub.Wait(t, 3, 5*time.Second); !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
		// A wrong password is refused.
		out, err := a.Run(t.Context(), "mosquitto_pub", append(m.ClientArgs(a), "-u", "site1", "-P", "bad", "-t", "x", "-m", "y")...)
		if err == nil {
			t.Errorf("publish with a wrong password succeeded: %s", out)
		}
	})
}
