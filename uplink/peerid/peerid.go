// Package peerid recognises the implementation of an L2TP/IPsec peer from
// what the protocol layers already parse: IKE vendor IDs (Main Mode), the
// L2TP Vendor-Name and Host-Name AVPs
// (SCCRQ) and PPP options. It parses nothing itself: Classify is a pure
// function over Observations, and its result is one value of a bounded
// set (Kinds), safe as a metrics label.
//
// Per-peer behaviour is named in one table, Quirks (quirks.go).
package peerid

import (
	"bytes"
	"crypto/md5"
	"strings"
	"sync/atomic"
)

// Kind is a recognised peer implementation; always one of Kinds.
type Kind string

// The bounded set of values Classify returns.
const (
	Windows         Kind = "windows"
	Apple           Kind = "apple"
	Android         Kind = "android"
	StrongSwan      Kind = "strongswan"
	Libreswan       Kind = "libreswan"
	XL2TPD          Kind = "xl2tpd"
	SoftEther       Kind = "softether"
	MikroTik        Kind = "mikrotik"
	FleetgateBridge Kind = "fleetgate-bridge"
	Unknown         Kind = "unknown"
)

// Kinds lists every value Classify may return (metrics pre-declare them).
var Kinds = []Kind{Windows, Apple, Android, StrongSwan, Libreswan, XL2TPD, SoftEther, MikroTik, FleetgateBridge, Unknown}

// Bounds on what a protocol layer keeps for Observations: a peer controls
// these values, so they are capped where they are recorded.
const (
	MaxVendorIDs   = 16  // vendor ID payloads kept per Main Mode
	MaxVendorIDLen = 64  // bytes kept of each
	MaxNameLen     = 128 // bytes kept of an L2TP Host-Name / Vendor-Name
)

// Observations is what the layers saw of one peer. Zero fields are "not
// seen" (e.g. a raw L2TP peer has no IKE fields).
type Observations struct {
	// VendorIDs are the bodies of the peer's IKE Vendor ID payloads.
	VendorIDs [][]byte
	// IKE is FromVendorIDs of the peer's vendor IDs, kept by the IKE
	// layer instead of the IDs themselves (a half-open Main Mode keeps a
	// Kind, not up to a kilobyte of peer bytes).
	IKE Kind
	// L2TPVendor and L2TPHost are the peer's Vendor-Name and Host-Name AVPs.
	L2TPVendor, L2TPHost string
}

// vid is MD5 of a vendor string, the usual construction of IKEv1 vendor IDs.
func vid(s string) []byte { h := md5.Sum([]byte(s)); return h[:] }

// Vendor IDs used by Rows (derived from their strings so a reader can
// check them).
var (
	// VIDStrongSwan is MD5("strongSwan"); charon sends it with
	// charon.send_vendor_id = yes.
	VIDStrongSwan = vid("strongSwan")
	// VIDMSNT5 is MD5("MS NT5 ISAKMPOAKLEY"); Windows appends a 4-byte
	// version (00000009 Windows 7+), so it is matched as a prefix.
	VIDMSNT5 = vid("MS NT5 ISAKMPOAKLEY")
	// VIDMSNegotiationDiscovery is MD5("MS-Negotiation Discovery Capable").
	VIDMSNegotiationDiscovery = vid("MS-Negotiation Discovery Capable")
	// VIDLibreswan: libreswan (and Openswan) send "OE" followed by a
	// version hash: 12 bytes starting with the ASCII "OE" prefix
	// ("OEu..." / "OSW..." for Openswan); matched on the 2-byte prefix
	// and the length.
	VIDLibreswanPrefix = []byte("OE")
	// VIDKAMERacoon is MD5("KAME/racoon") (ipsec-tools racoon: Android <= 11
	// and Apple's IPSec stack derive from it).
	VIDKAMERacoon = vid("KAME/racoon")
)

// Evidence is how a Row's signals were established.
type Evidence string

const (
	// Verified: an interop test against the real peer asserts this row.
	Verified Evidence = "verified"
	// FromDocumentation: no such peer runs in our tests; Source names
	// where the signal is documented.
	FromDocumentation Evidence = "from documentation"
)

// Row recognises one implementation. A row matches when any of its
// signals is present; rows are tried in order, the first match wins.
type Row struct {
	Kind Kind
	// VIDs match a vendor ID exactly; VIDPrefixes match its start.
	VIDs, VIDPrefixes [][]byte
	// VIDLen, when set, restricts VIDPrefixes to vendor IDs of that length.
	VIDLen int
	// L2TPVendorPrefixes and L2TPHostPrefixes match the AVPs (case
	// insensitively).
	L2TPVendorPrefixes, L2TPHostPrefixes []string
	Evidence                             Evidence
	// Source: the test asserting a Verified row, or the document naming
	// a FromDocumentation signal.
	Source string
}

// Rows is the fingerprint table. Whole-stack clients (one vendor builds
// IKE and L2TP) come first; then the Linux IKE daemons (their vendor ID is
// opt-in); then xl2tpd, which runs under either IKE daemon and is what
// identifies a strongSwan/libreswan + xl2tpd client that sends no
// implementation vendor ID (charon's default).
var Rows = []Row{
	{Kind: FleetgateBridge, L2TPVendorPrefixes: []string{"fleetgate"}, Evidence: Verified,
		Source: "gateway/engine TestLoopbackEndToEnd (the bridge's tunnel client sends Vendor-Name \"fleetgate-bridge\")"},
	{Kind: Windows, VIDPrefixes: [][]byte{VIDMSNT5}, VIDs: [][]byte{VIDMSNegotiationDiscovery}, L2TPVendorPrefixes: []string{"microsoft"},
		Evidence: FromDocumentation, Source: "Wireshark packet-isakmp.c vendor table (MS NT5 ISAKMPOAKLEY + version); charon/pluto logs of Windows clients ('received MS NT5 ISAKMPOAKLEY v9 vendor ID'); Windows RRAS sends Vendor-Name \"Microsoft\""},
	{Kind: Android, L2TPHostPrefixes: []string{"android-l2tp"},
		Evidence: FromDocumentation, Source: "AOSP external/mtpd l2tp.c (Host-Name \"android-l2tp\"); Android <= 11 pairs it with racoon"},
	{Kind: Apple, L2TPVendorPrefixes: []string{"apple"},
		Evidence: FromDocumentation, Source: "Apple ppp project, Drivers/L2TP (Vendor-Name \"Apple Computer, Inc.\"); macOS/iOS IKEv1 is racoon-derived and sends no distinctive vendor ID"},
	{Kind: SoftEther, L2TPVendorPrefixes: []string{"softether"}, L2TPHostPrefixes: []string{"softether"},
		Evidence: FromDocumentation, Source: "SoftEther VPN Proton.c/IPsec_L2TP.c (L2TP_VENDOR_NAME \"SoftEther Corporation\"); SoftEther runs only as a server in our tests"},
	{Kind: MikroTik, L2TPVendorPrefixes: []string{"mikrotik"},
		Evidence: FromDocumentation, Source: "RouterOS L2TP client sends Vendor-Name \"MikroTik\" (MikroTik wiki, L2TP)"},
	{Kind: StrongSwan, VIDs: [][]byte{VIDStrongSwan}, Evidence: Verified,
		Source: "gateway/engine TestCharonInitiator (charon with send_vendor_id = yes)"},
	{Kind: Libreswan, VIDPrefixes: [][]byte{VIDLibreswanPrefix}, VIDLen: 12,
		Evidence: FromDocumentation, Source: "libreswan programs/pluto/vendor.c (own vendor ID: \"OE\" + 10 bytes of a version hash)"},
	{Kind: XL2TPD, L2TPVendorPrefixes: []string{"xelerance.com"}, Evidence: Verified,
		Source: "gateway/engine TestXL2TPDRawL2TP (xl2tpd 1.3 sends Vendor-Name \"xelerance.com\")"},
}

// Classify returns the implementation the observations point to, Unknown
// when no row matches. It is pure and cheap (called once per session).
func Classify(o Observations) Kind {
	for i := range Rows {
		if Rows[i].matches(&o) {
			return Rows[i].Kind
		}
	}
	return Unknown
}

// FromVendorIDs classifies by IKE vendor IDs alone (Unknown when none
// names an implementation); the IKE layer calls it on Main Mode's first
// message and keeps the result as Observations.IKE.
func FromVendorIDs(vids [][]byte) Kind {
	if len(vids) == 0 {
		return Unknown
	}
	return Classify(Observations{VendorIDs: vids})
}

func (r *Row) matches(o *Observations) bool {
	if o.IKE == r.Kind {
		return true
	}
	for _, v := range o.VendorIDs {
		for _, w := range r.VIDs {
			if bytes.Equal(v, w) {
				return true
			}
		}
		for _, p := range r.VIDPrefixes {
			if bytes.HasPrefix(v, p) && (r.VIDLen == 0 || len(v) == r.VIDLen) {
				return true
			}
		}
	}
	return hasPrefixFold(o.L2TPVendor, r.L2TPVendorPrefixes) || hasPrefixFold(o.L2TPHost, r.L2TPHostPrefixes)
}

func hasPrefixFold(s string, ps []string) bool {
	if s == "" {
		return false
	}
	for _, p := range ps {
		if len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) {
			return true
		}
	}
	return false
}

// Valid reports whether k is one of Kinds.
func Valid(k Kind) bool {
	for _, x := range Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// KeepVendorID appends a copy of v, capped to MaxVendorIDLen bytes, to vs
// unless vs already holds MaxVendorIDs entries: what a protocol layer uses
// to record a peer's vendor IDs within the bounds.
func KeepVendorID(vs [][]byte, v []byte) [][]byte {
	if len(vs) >= MaxVendorIDs {
		return vs
	}
	if len(v) > MaxVendorIDLen {
		v = v[:MaxVendorIDLen]
	}
	return append(vs, bytes.Clone(v))
}

// KeepName caps a peer-supplied name to MaxNameLen bytes.
func KeepName(s string) string {
	if len(s) > MaxNameLen {
		return s[:MaxNameLen]
	}
	return s
}

// Counts is one counter per Kind (a Stats field: bounded by construction).
type Counts [10]atomic.Uint64

// Add counts one peer of kind k (a value outside Kinds counts as Unknown).
func (c *Counts) Add(k Kind) { c[index(k)].Add(1) }

// Load returns the count for k.
func (c *Counts) Load(k Kind) uint64 { return c[index(k)].Load() }

func index(k Kind) int {
	for i, x := range Kinds {
		if x == k {
			return i
		}
	}
	return len(Kinds) - 1 // Unknown
}
