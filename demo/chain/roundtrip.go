package chain

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/fleetgate/fleetgate/downlink/registry"
	simdevice "github.com/fleetgate/fleetgate/firmware-sim/device"
	"github.com/fleetgate/fleetgate/firmware-sim/senml"
)

// roundTripLoop waits until the target's telemetry reached central, then
// tries the central → device GET until it succeeds or ctx ends.
func roundTripLoop(ctx context.Context, g *gateway, st *state, target registry.Endpoint) {
	st.mu.Lock()
	st.rt = RoundTrip{Target: fmt.Sprintf("%s (%s)", target.Name, target.Addr), Result: "waiting for the device's first telemetry"}
	st.mu.Unlock()
	if !target.Addr.IsValid() {
		st.mu.Lock()
		st.rt.Result = "no PSK CoAP endpoint in the fleet"
		st.mu.Unlock()
		return
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var msgID uint16 = 0x4000
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st.mu.Lock()
		e := st.eps[target.Name]
		ready := e != nil && e.Messages > 0
		st.mu.Unlock()
		if !ready {
			continue
		}
		msgID++
		start := time.Now()
		res, err := centralGet(ctx, g, target.Addr, simdevice.PathTemp, msgID)
		st.mu.Lock()
		if err != nil {
			st.rt.Result = "retrying: " + err.Error()
			st.mu.Unlock()
			continue
		}
		st.rt = RoundTrip{Target: st.rt.Target, OK: true, RTT: time.Since(start), Result: res}
		st.mu.Unlock()
		return
	}
}

// centralGet sends one confirmable CoAP GET (RFC 7252 §5.8.1) from the
// central stack to addr:5683 and decodes the SenML answer.
func centralGet(ctx context.Context, g *gateway, addr netip.Addr, path string, msgID uint16) (string, error) {
	conn, err := g.stack.DialUDP(netip.AddrPortFrom(g.central, 0), netip.AddrPortFrom(addr, 5683))
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close() }()
	req := pool.NewMessage(ctx)
	req.SetCode(codes.GET)
	req.SetType(message.Confirmable)
	req.SetMessageID(int32(msgID))
	token := []byte{byte(msgID >> 8), byte(msgID), 0xfe, 0xed}
	req.SetToken(token)
	if err := req.SetPath(path); err != nil {
		return "", err
	}
	b, err := req.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		return "", err
	}
	_ = conn.SetDeadline(time.Now().Add(8 * time.Second))
	if _, err := conn.Write(b); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return "", err
		}
		resp := pool.NewMessage(ctx)
		if _, err := resp.UnmarshalWithDecoder(coder.DefaultCoder, buf[:n]); err != nil {
			continue
		}
		if string(resp.Token()) != string(token) {
			continue // empty ACK of a separate response, or stale
		}
		if resp.Type() == message.Confirmable {
			ack := pool.NewMessage(ctx)
			ack.SetType(message.Acknowledgement)
			ack.SetCode(codes.Empty)
			ack.SetMessageID(resp.MessageID())
			if ab, err := ack.MarshalWithEncoder(coder.DefaultCoder); err == nil {
				_, _ = conn.Write(ab)
			}
		}
		if resp.Code() != codes.Content {
			return "", fmt.Errorf("GET %s: %v", path, resp.Code())
		}
		body, _ := resp.ReadBody()
		cf, err := resp.ContentFormat()
		if err != nil {
			return "", errors.New("GET: response without Content-Format")
		}
		f, err := senml.FormatFromContentFormat(uint16(cf))
		if err != nil {
			return "", err
		}
		p, err := senml.Decode(body, f)
		if err != nil {
			return "", err
		}
		rs, err := p.Resolve()
		if err != nil || len(rs) == 0 {
			return "", fmt.Errorf("GET: empty SenML pack: %v", err)
		}
		v := "?"
		if rs[0].Value != nil {
			v = fmt.Sprintf("%.2f", *rs[0].Value)
		}
		return fmt.Sprintf("2.05 Content %s = %s %s", rs[0].Name, v, rs[0].Unit), nil
	}
}
