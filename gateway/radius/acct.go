package radius

import (
	"context"
	"net"
	"net/netip"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
	"layeh.com/radius/rfc4818"
)

// AcctStatus is the Acct-Status-Type of an accounting record.
type AcctStatus int

// Accounting record types (RFC 2866 §5.1).
const (
	AcctStart   AcctStatus = AcctStatus(rfc2866.AcctStatusType_Value_Start)
	AcctStop    AcctStatus = AcctStatus(rfc2866.AcctStatusType_Value_Stop)
	AcctInterim AcctStatus = AcctStatus(rfc2866.AcctStatusType_Value_InterimUpdate)
)

// Termination causes (RFC 2866 §5.10) used by the gateway.
const (
	CauseUserRequest = int(rfc2866.AcctTerminateCause_Value_UserRequest) // peer sent Delete/StopCCN/LCP Terminate
	CauseLostCarrier = int(rfc2866.AcctTerminateCause_Value_LostCarrier) // DPD / LCP echo timeout
	CauseAdminReset  = int(rfc2866.AcctTerminateCause_Value_AdminReset)  // reload, relogin replacement
	CauseNASReboot   = int(rfc2866.AcctTerminateCause_Value_NASReboot)   // gateway shutdown
)

// AcctRecord is one accounting record. Byte and packet counters are from
// the user's point of view as RFC 2866 defines them: Input = received
// from the user (uplink), Output = sent to the user.
type AcctRecord struct {
	Status    AcctStatus
	SessionID string
	User      string
	CallingID string
	NASPort   uint32
	FramedIP  netip.Addr
	// IPv6Prefix is the session's IPv6 site prefix, sent as
	// Delegated-IPv6-Prefix (RFC 4818 §3); invalid: none.
	IPv6Prefix netip.Prefix `json:",omitzero"`
	Class      []byte

	InputBytes, OutputBytes     uint64
	InputPackets, OutputPackets uint64
	SessionTime                 time.Duration
	// TerminateCause is set on Stop.
	TerminateCause int
	// Delay is how long the record waited to be sent (Acct-Delay-Time,
	// RFC 2866 §5.2); set by the spool.
	Delay time.Duration
}

// Account sends one Accounting-Request and waits for the response.
func (c *Client) Account(ctx context.Context, r AcctRecord) error {
	if !c.HasAcct() {
		return ErrNoAcct
	}
	p := radius.New(radius.CodeAccountingRequest, c.cfg.Secret)
	_ = rfc2866.AcctStatusType_Set(p, rfc2866.AcctStatusType(r.Status))
	_ = rfc2865.UserName_SetString(p, r.User)
	c.addNAS(p, r.SessionID, r.CallingID, r.NASPort)
	if r.FramedIP.IsValid() {
		_ = rfc2865.FramedIPAddress_Set(p, r.FramedIP.AsSlice())
	}
	if r.IPv6Prefix.IsValid() && r.IPv6Prefix.Addr().Is6() {
		_ = rfc4818.DelegatedIPv6Prefix_Set(p, &net.IPNet{IP: r.IPv6Prefix.Addr().AsSlice(), Mask: net.CIDRMask(r.IPv6Prefix.Bits(), 128)})
	}
	if len(r.Class) > 0 {
		_ = rfc2865.Class_Set(p, r.Class)
	}
	_ = rfc2866.AcctAuthentic_Set(p, rfc2866.AcctAuthentic_Value_RADIUS)
	if r.Status != AcctStart {
		// Octet counters wrap at 2^32; the high part goes in gigawords
		// (RFC 2869 §5.1, §5.2).
		_ = rfc2866.AcctInputOctets_Set(p, rfc2866.AcctInputOctets(uint32(r.InputBytes)))
		_ = rfc2869.AcctInputGigawords_Set(p, rfc2869.AcctInputGigawords(uint32(r.InputBytes>>32)))
		_ = rfc2866.AcctOutputOctets_Set(p, rfc2866.AcctOutputOctets(uint32(r.OutputBytes)))
		_ = rfc2869.AcctOutputGigawords_Set(p, rfc2869.AcctOutputGigawords(uint32(r.OutputBytes>>32)))
		_ = rfc2866.AcctInputPackets_Set(p, rfc2866.AcctInputPackets(uint32(r.InputPackets)))
		_ = rfc2866.AcctOutputPackets_Set(p, rfc2866.AcctOutputPackets(uint32(r.OutputPackets)))
		_ = rfc2866.AcctSessionTime_Set(p, rfc2866.AcctSessionTime(uint32(r.SessionTime/time.Second)))
	}
	if r.Status == AcctStop && r.TerminateCause != 0 {
		_ = rfc2866.AcctTerminateCause_Set(p, rfc2866.AcctTerminateCause(r.TerminateCause))
	}
	if r.Delay > 0 {
		_ = rfc2866.AcctDelayTime_Set(p, rfc2866.AcctDelayTime(uint32(r.Delay/time.Second)))
	}
	resp, err := c.poolExchange(ctx, c.acct, p)
	if err != nil {
		c.Stats.AcctFailed.Add(1)
		return err
	}
	if resp.Code != radius.CodeAccountingResponse {
		c.Stats.AcctFailed.Add(1)
		return &unexpectedCode{resp.Code}
	}
	c.Stats.AcctSent.Add(1)
	return nil
}

type unexpectedCode struct{ code radius.Code }

func (e *unexpectedCode) Error() string { return "radius: unexpected reply " + e.code.String() }
