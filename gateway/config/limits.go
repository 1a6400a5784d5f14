package config

import (
	"time"

	"github.com/fleetgate/fleetgate/gateway/radius"
	"github.com/fleetgate/fleetgate/uplink/ike"
)

// Limits bound the state a peer can make the gateway keep before (and
// just after) it has authenticated: issue 18, "bounded under attack".
// Every key has a safe default; each limit has a counter when hit
// (fleetgate_session_setup_failures_total{phase="admission"} and the IKE
// counters). Changing them needs a restart.
type Limits struct {
	// IKEHalfOpen bounds Main Modes waiting for their third message
	// (address not proven; ≈ 430 bytes each); when full the oldest is
	// evicted. Sized for a flood: at R spoofed first messages a second an
	// entry lives IKEHalfOpen/R seconds.
	IKEHalfOpen int `yaml:"ike_half_open"`
	// IKEHalfOpenTimeout drops a Main Mode not established in time.
	IKEHalfOpenTimeout string `yaml:"ike_half_open_timeout"`
	// IKENegotiating bounds Main Modes past their third message (address
	// proven, Diffie-Hellman done) and not yet established.
	IKENegotiating int `yaml:"ike_negotiating"`
	// IKESAsPerSource bounds ISAKMP SAs per peer address (sites behind
	// one NAT share it).
	IKESAsPerSource int `yaml:"ike_sas_per_source"`
	// IKEQuickModesPerSA and IKEChildrenPerSA bound the Quick Modes open
	// and the IPsec SA pairs under one ISAKMP SA.
	IKEQuickModesPerSA int `yaml:"ike_quick_modes_per_sa"`
	IKEChildrenPerSA   int `yaml:"ike_children_per_sa"`
	// RADIUSInFlight bounds the RADIUS Access-Requests waiting at once;
	// a PPP login beyond it fails at once (fleetgate_radius_busy_total).
	RADIUSInFlight int `yaml:"radius_in_flight"`

	// IKEHalfOpenTimeoutD is the parsed IKEHalfOpenTimeout.
	IKEHalfOpenTimeoutD time.Duration `yaml:"-"`
}

// limitRange is one integer limit's default and accepted range.
type limitRange struct {
	key      string
	v        *int
	def, max int
	min      int
}

func (v *validator) limits() {
	l := &v.c.Limits
	for _, r := range []limitRange{
		{"ike_half_open", &l.IKEHalfOpen, ike.DefaultMaxHalfOpen, 1 << 20, 16},
		{"ike_negotiating", &l.IKENegotiating, ike.DefaultMaxNegotiating, 1 << 16, 1},
		{"ike_sas_per_source", &l.IKESAsPerSource, ike.DefaultMaxSAsPerSource, 1 << 16, 2},
		{"ike_quick_modes_per_sa", &l.IKEQuickModesPerSA, ike.DefaultMaxQuickModes, 1024, 2},
		{"ike_children_per_sa", &l.IKEChildrenPerSA, ike.DefaultMaxChildren, 1024, 2},
		{"radius_in_flight", &l.RADIUSInFlight, radius.DefaultMaxInFlight, 1 << 16, 1},
	} {
		switch {
		case *r.v == 0:
			*r.v = r.def
		case *r.v < r.min || *r.v > r.max:
			v.errf(p("limits", r.key), "limits.%s %d out of range %d..%d (default %d; remove the key to use it)", r.key, *r.v, r.min, r.max, r.def)
			*r.v = r.def
		}
	}
	l.IKEHalfOpenTimeoutD = v.duration(l.IKEHalfOpenTimeout, ike.DefaultHalfOpenTimeout, "limits", "ike_half_open_timeout")
	if d := l.IKEHalfOpenTimeoutD; d < 5*time.Second || d > 5*time.Minute {
		v.errf(p("limits", "ike_half_open_timeout"), "limits.ike_half_open_timeout %v out of range 5s..5m (default %v): a real peer needs a few round trips, a flood must not be held for long", d, ike.DefaultHalfOpenTimeout)
		l.IKEHalfOpenTimeoutD = ike.DefaultHalfOpenTimeout
	}
}
