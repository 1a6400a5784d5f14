package collector

import (
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

func decodeForTest(b []byte, m *message.Message) (int, error) {
	if m.Options == nil {
		m.Options = make(message.Options, 0, maxOptions)
	}
	return coder.DefaultCoder.Decode(b, m)
}
