package mqttrelay

import (
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// FuzzPubrecScanner: the stream scanner never panics, and feeding a stream
// in two chunks reports exactly what feeding it whole does.
func FuzzPubrecScanner(f *testing.F) {
	rec := packets.NewControlPacket(packets.Pubrec).(*packets.PubrecPacket)
	rec.MessageID = 42
	f.Add(encode(f, rec), 1)
	f.Add([]byte{0x30, 0x03, 0x00, 0x01, 'a', 0x50, 0x02, 0x00, 0x09}, 4)
	f.Add([]byte{0xd0, 0x00, 0x50, 0x80, 0x01}, 2)
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		var whole, parts []uint16
		var s1, s2 pubrecScanner
		err1 := s1.feed(b, func(id uint16) { whole = append(whole, id) })
		if split < 0 || split > len(b) {
			split = len(b) / 2
		}
		err2 := s2.feed(b[:split], func(id uint16) { parts = append(parts, id) })
		if err2 == nil {
			err2 = s2.feed(b[split:], func(id uint16) { parts = append(parts, id) })
		}
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("errors differ: whole %v, split %v", err1, err2)
		}
		if err1 == nil && len(whole) != len(parts) {
			t.Fatalf("whole %v, split %v", whole, parts)
		}
		for i := range whole {
			if err1 == nil && whole[i] != parts[i] {
				t.Fatalf("whole %v, split %v", whole, parts)
			}
		}
	})
}
