package mqttrelay

import (
	"net"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/fleetgate/fleetgate/bridge/spool"
)

// TestStoreLifecycle drives the paho store as paho would: Put of a PUBLISH
// binds the spool message announced by setExpect; PUBREC moves it to
// stage 2; Del (PUBCOMP) acks it in the spool. A PUBREL carried over into
// a new connection holds back new publishes until its PUBCOMP.
func TestStoreLifecycle(t *testing.T) {
	sp, err := spool.Open(spool.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	seq, err := sp.Append(spool.Message{Endpoint: "e", Topic: "telemetry/t", QoS: 2, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	st := newSessionStore(sp, "e")
	st.setExpect(seq)
	pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pub.Qos, pub.MessageID, pub.TopicName = 2, 7, "sites/s/e/telemetry/t"
	st.Put("o.7", pub)
	if m := sp.Pending("e", 0, 1); len(m) != 1 || m[0].PacketID != 7 || m[0].Stage != 1 {
		t.Fatalf("after Put: %+v, want bound to 7 stage 1", m)
	}
	if !st.holds(seq) || st.inflight() != 1 {
		t.Fatalf("store does not hold seq %d", seq)
	}
	if err := st.pubrec(7); err != nil {
		t.Fatal(err)
	}
	if m := sp.Pending("e", 0, 1); len(m) != 1 || m[0].Stage != 2 {
		t.Fatalf("after PUBREC: %+v, want stage 2", m)
	}
	if _, rel := st.Get("o.7").(*packets.PubrelPacket); !rel {
		t.Fatalf("after PUBREC the store should resume a PUBREL, has %T", st.Get("o.7"))
	}
	// The connection drops here; the next one carries the PUBREL over.
	if n := st.carryOver(); n != 1 {
		t.Fatalf("carryOver: got %d, want 1", n)
	}
	if st.carriedPending() != 1 {
		t.Fatal("carried PUBREL not pending")
	}
	st.Del("o.7") // PUBCOMP
	if st.carriedPending() != 0 || st.inflight() != 0 {
		t.Fatalf("after PUBCOMP: carried %d, inflight %d", st.carriedPending(), st.inflight())
	}
	if got := sp.Stats().Queued.Load(); got != 0 {
		t.Fatalf("spool still holds %d after PUBCOMP", got)
	}
	// Subscribe packets and inbound state never touch the spool.
	sub := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	sub.MessageID = 8
	st.Put("o.8", sub)
	st.Put("i.9", pub)
	st.Del("o.8")
	st.Del("i.9")
	if got := sp.Stats().Delivered.Load(); got != 1 {
		t.Fatalf("Delivered: got %d, want 1", got)
	}
}

// TestResumedCompletionNotResent: after a restart the pump starts at cursor
// 0 and skips the messages resumed from the spool because the store holds
// them. A resumed message whose PUBCOMP arrives between the pump's Pending
// snapshot and its holds check must still count as handed to paho: before
// the fix the store forgot it before the spool Ack, the pump published it
// again under a new packet id, and central delivered it twice (e2e
// TestMqttOutageWithoutLoss, flow-4 seqs 104-107).
func TestResumedCompletionNotResent(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(spool.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for i := range 3 {
		seq, err := sp.Append(spool.Message{Endpoint: "e", Topic: "telemetry/t", QoS: 2, Payload: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	for i, seq := range seqs[:2] { // two were handed to paho before the kill
		if err := sp.Bind("e", seq, uint16(5+i), 1, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sp, err = spool.Open(spool.Config{Dir: dir}) // the restart
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	st := newSessionStore(sp, "e")
	for _, m := range sp.Pending("e", 0, 10) {
		if m.Stage == 1 {
			p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
			p.Qos, p.Dup, p.MessageID = 2, true, m.PacketID
			st.preload(m, p)
		}
	}
	snapshot := sp.Pending("e", 0, 10) // the pump, cursor 0
	st.Del("o.5")                      // PUBCOMP of the first resumed message
	var resend []uint64
	for _, m := range snapshot {
		if !st.holds(m.Seq) {
			resend = append(resend, m.Seq)
		}
	}
	if len(resend) != 1 || resend[0] != seqs[2] {
		t.Fatalf("pump would publish seqs %v anew, want only %d (resumed: %v)", resend, seqs[2], seqs[:2])
	}
	st.forget(seqs[1])
	if len(st.done) != 0 {
		t.Fatalf("completed seqs kept after the cursor passed them: %v", st.done)
	}
}

// TestBindFailureStopsTheFlow: when the spool cannot record a binding,
// paho must not send what a restart would contradict. A failed stage 1
// (Put) closes the connection's socket before paho writes the PUBLISH; a
// failed stage 2 (PUBREC) leaves the entry a PUBLISH (resumed with DUP and
// the same id, not a PUBREL) and the sniffer closes the connection before
// paho sees the PUBREC, so no PUBREL goes out.
func TestBindFailureStopsTheFlow(t *testing.T) {
	sp, err := spool.Open(spool.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	seq, err := sp.Append(spool.Message{Endpoint: "e", Topic: "telemetry/t", QoS: 2, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	st := newSessionStore(sp, "e")
	var errs int
	st.onErr = func(error) { errs++ }
	mine, theirs := net.Pipe()
	defer theirs.Close()
	st.setConn(mine)
	_ = sp.Close() // every later write fails
	st.setExpect(seq)
	pub := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	pub.Qos, pub.MessageID, pub.TopicName = 2, 7, "sites/s/e/telemetry/t"
	st.Put("o.7", pub)
	if _, err := mine.Write([]byte{0x30}); err == nil {
		t.Fatal("stage 1 not written, but the connection still takes the PUBLISH")
	}
	if err := st.pubrec(7); err == nil {
		t.Fatal("stage 2 not written, but pubrec reported success")
	}
	if _, isPub := st.Get("o.7").(*packets.PublishPacket); !isPub {
		t.Fatalf("after a failed stage 2 the store resumes a %T, want the PUBLISH", st.Get("o.7"))
	}
	if errs != 2 {
		t.Fatalf("spool errors reported: %d, want 2", errs)
	}
	// The sniffer: a PUBREC whose stage cannot be recorded never reaches paho.
	a, b := net.Pipe()
	defer b.Close()
	sc := newSniffConn(a, st.pubrec)
	go func() { _, _ = b.Write([]byte{0x50, 0x02, 0x00, 0x07}) }()
	buf := make([]byte, 16)
	if n, err := sc.Read(buf); n != 0 || err == nil {
		t.Fatalf("sniffer passed %d bytes of an unrecorded PUBREC to paho (err %v)", n, err)
	}
}
