package mqttrelay

import (
	"errors"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func TestMapping(t *testing.T) {
	m := Mapping{}.withDefaults()
	if err := m.validate(); err != nil {
		t.Fatal(err)
	}
	if got, want := m.Up("s1", "sensor-1", "telemetry/temp"), "sites/s1/sensor-1/telemetry/temp"; got != want {
		t.Errorf("Up: got %q, want %q", got, want)
	}
	down := []struct {
		in   string
		want string
		ok   bool
	}{
		{"sites/s1/sensor-1/cmd/reboot", "cmd/reboot", true},
		{"sites/s1/sensor-11/cmd/reboot", "", false},
		{"sites/s2/sensor-1/cmd/reboot", "", false},
		{"sites/s1/sensor-1/", "", false},
		{"cmd/reboot", "", false},
	}
	for _, tt := range down {
		got, ok := m.Down("s1", "sensor-1", tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Down(%q): got %q %v, want %q %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	if got := m.Subscriptions("s1", "sensor-1"); len(got) != 1 || got[0] != "sites/s1/sensor-1/cmd/#" {
		t.Errorf("Subscriptions: got %v", got)
	}
	custom := Mapping{Prefix: "plant/{site}/dev/{endpoint}/", Commands: []string{"cmd/#", "config/+"}}
	if err := custom.validate(); err != nil {
		t.Fatal(err)
	}
	if got := custom.Subscriptions("s1", "e"); len(got) != 2 || got[1] != "plant/s1/dev/e/config/+" {
		t.Errorf("custom Subscriptions: got %v", got)
	}
	for _, bad := range []Mapping{
		{Prefix: "sites/{site}/{endpoint}", Commands: []string{"cmd/#"}},
		{Prefix: "sites/{endpoint}/", Commands: []string{"cmd/#"}}, // not unique across sites
		{Prefix: "sites/{site}/", Commands: []string{"cmd/#"}},
		{Prefix: "sites/+/{endpoint}/", Commands: []string{"cmd/#"}},
		{Prefix: "sites/{site}/{endpoint}/", Commands: []string{"$SYS/#"}},
		{Prefix: "sites/{site}/{endpoint}/", Commands: []string{""}},
	} {
		if err := bad.validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("validate(%+v): got %v, want ErrConfig", bad, err)
		}
	}
}

func encode(t testing.TB, p packets.ControlPacket) []byte {
	t.Helper()
	var b bytesBuffer
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.b
}

type bytesBuffer struct{ b []byte }

func (w *bytesBuffer) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

func TestPubrecScanner(t *testing.T) {
	pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pub.TopicName, pub.Qos, pub.MessageID, pub.Payload = "sites/s1/e/cmd/x", 1, 7, make([]byte, 300) // 2-byte length
	rec := func(id uint16) []byte {
		p := packets.NewControlPacket(packets.Pubrec).(*packets.PubrecPacket)
		p.MessageID = id
		return encode(t, p)
	}
	comp := packets.NewControlPacket(packets.Pubcomp).(*packets.PubcompPacket)
	comp.MessageID = 3
	ping := encode(t, packets.NewControlPacket(packets.Pingresp))
	var stream []byte
	stream = append(stream, encode(t, pub)...)
	stream = append(stream, rec(0x0102)...)
	stream = append(stream, ping...)
	stream = append(stream, encode(t, comp)...)
	stream = append(stream, rec(0xfffe)...)
	want := []uint16{0x0102, 0xfffe}
	// Any chunking of the stream must give the same result.
	for _, chunk := range []int{1, 2, 3, 7, len(stream)} {
		var s pubrecScanner
		var got []uint16
		for i := 0; i < len(stream); i += chunk {
			end := min(i+chunk, len(stream))
			if err := s.feed(stream[i:end], func(id uint16) { got = append(got, id) }); err != nil {
				t.Fatalf("chunk %d: %v", chunk, err)
			}
		}
		if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("chunk %d: got %v, want %v", chunk, got, want)
		}
	}
	var s pubrecScanner
	if err := s.feed([]byte{0x30, 0xff, 0xff, 0xff, 0xff}, func(uint16) {}); !errors.Is(err, ErrMalformed) {
		t.Errorf("5-byte remaining length: got %v, want ErrMalformed", err)
	}
}
