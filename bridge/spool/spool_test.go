package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/internal/stacktest"
)

func openT(t *testing.T, cfg Config) *Spool {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func msg(ep string, qos byte, i int) Message {
	return Message{Endpoint: ep, Topic: "telemetry/seq", QoS: qos, Payload: []byte(fmt.Sprintf("%06d", i))}
}

func payloads(ms []Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Payload))
	}
	return out
}

func TestAppendAckRecoverOrder(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir})
	var seqs []uint64
	for i := 0; i < 10; i++ {
		for _, ep := range []string{"a", "b"} {
			seq, err := s.Append(msg(ep, byte(i%3), i))
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			seqs = append(seqs, seq)
		}
	}
	if !sort.SliceIsSorted(seqs, func(i, j int) bool { return seqs[i] < seqs[j] }) {
		t.Fatalf("seqs not increasing: %v", seqs)
	}
	// Deliver the first three of "a".
	for _, m := range s.Pending("a", 0, 3) {
		if err := s.Ack("a", m.Seq); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	if got, want := s.Stats().Queued.Load(), int64(17); got != want {
		t.Fatalf("queued: got %d, want %d", got, want)
	}
	s.abandon() // crash: no Close
	s2 := openT(t, Config{Dir: dir})
	if got, want := s2.Stats().Recovered.Load(), uint64(17); got != want {
		t.Fatalf("recovered: got %d, want %d", got, want)
	}
	got := payloads(s2.Pending("a", 0, 100))
	want := []string{"000003", "000004", "000005", "000006", "000007", "000008", "000009"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("a after recovery: got %v, want %v", got, want)
	}
	if got := len(s2.Pending("b", 0, 100)); got != 10 {
		t.Fatalf("b after recovery: got %d messages, want 10", got)
	}
	// New sequence numbers continue above the recovered ones.
	seq, err := s2.Append(msg("a", 1, 10))
	if err != nil || seq <= seqs[len(seqs)-1] {
		t.Fatalf("Append after recovery: seq %d err %v, want > %d", seq, err, seqs[len(seqs)-1])
	}
}

func TestTornTailAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir})
	for i := 0; i < 5; i++ {
		if _, err := s.Append(msg("a", 1, i)); err != nil {
			t.Fatal(err)
		}
	}
	s.abandon()
	// A crash in the middle of the 6th write leaves half a record.
	seg := lastSegment(t, dir)
	half, _ := AppendRecord(nil, Record{Type: RecordPut, Msg: Message{Seq: 99, Endpoint: "a", Topic: "t", QoS: 1, Payload: []byte("torn")}})
	appendFile(t, seg, half[:len(half)/2])

	s2 := openT(t, Config{Dir: dir})
	if got := len(s2.Pending("a", 0, 100)); got != 5 {
		t.Fatalf("after torn tail: got %d messages, want 5", got)
	}
	if got := s2.Stats().TornTails.Load(); got != 1 {
		t.Fatalf("TornTails: got %d, want 1", got)
	}
	// New appends go to a new segment, and a second recovery sees them all.
	if _, err := s2.Append(msg("a", 1, 5)); err != nil {
		t.Fatal(err)
	}
	s2.abandon()
	s3 := openT(t, Config{Dir: dir})
	got := payloads(s3.Pending("a", 0, 100))
	if len(got) != 6 || got[5] != "000005" {
		t.Fatalf("after second recovery: got %v", got)
	}
}

func TestBitFlipLosesOnlyThatRecord(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir})
	var sizes []int
	for i := 0; i < 5; i++ {
		if _, err := s.Append(msg("a", 2, i)); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, Record{Type: RecordPut, Msg: msg("a", 2, i)}.encodedLen())
	}
	s.abandon()
	seg := lastSegment(t, dir)
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	off := sizes[0] + sizes[1] + 12 // inside record 3
	b[off] ^= 0x10
	if err := os.WriteFile(seg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := openT(t, Config{Dir: dir})
	got := payloads(s2.Pending("a", 0, 100))
	want := []string{"000000", "000001", "000003", "000004"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := s2.Stats().CorruptRegions.Load(); got != 1 {
		t.Fatalf("CorruptRegions: got %d, want 1", got)
	}
}

func TestOverflowPolicy(t *testing.T) {
	one := int64(Record{Type: RecordPut, Msg: msg("a", 0, 0)}.encodedLen())
	s := openT(t, Config{Dir: t.TempDir(), MaxBytes: 4 * one})
	// Fill: two QoS 0 (a), two QoS 1 (b).
	for i, m := range []Message{msg("a", 0, 0), msg("b", 1, 1), msg("a", 0, 2), msg("b", 1, 3)} {
		if _, err := s.Append(m); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	// A QoS 1 message makes room by dropping the oldest QoS 0.
	if _, err := s.Append(msg("b", 1, 4)); err != nil {
		t.Fatalf("append with room from QoS 0: %v", err)
	}
	if got := payloads(s.Pending("a", 0, 10)); fmt.Sprint(got) != "[000002]" {
		t.Fatalf("a after first drop: got %v, want [000002]", got)
	}
	if _, err := s.Append(msg("b", 2, 5)); err != nil {
		t.Fatalf("append: %v", err)
	}
	// No QoS 0 left: QoS 1 is refused, QoS 0 dropped.
	if _, err := s.Append(msg("b", 1, 6)); !errors.Is(err, ErrFull) {
		t.Fatalf("QoS 1 over bound: got %v, want ErrFull", err)
	}
	if _, err := s.Append(msg("a", 0, 7)); !errors.Is(err, ErrFull) {
		t.Fatalf("QoS 0 over bound: got %v, want ErrFull", err)
	}
	st := s.Stats()
	if got, want := st.DroppedOverflow.Load(), uint64(3); got != want {
		t.Errorf("DroppedOverflow: got %d, want %d", got, want)
	}
	if got, want := st.RefusedFull.Load(), uint64(1); got != want {
		t.Errorf("RefusedFull: got %d, want %d", got, want)
	}
	if got, max := st.Bytes.Load(), 4*one; got > max {
		t.Errorf("Bytes: got %d, want <= %d", got, max)
	}
	// Acking frees room again.
	for _, m := range s.Pending("b", 0, 1) {
		if err := s.Ack("b", m.Seq); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(msg("b", 1, 8)); err != nil {
		t.Fatalf("append after ack: %v", err)
	}
	// The drops are durable: a restart does not resurrect dropped QoS 0.
	dir := s.Dir()
	s.abandon()
	s2 := openT(t, Config{Dir: dir, MaxBytes: 4 * one})
	if got := len(s2.Pending("a", 0, 10)); got != 0 {
		t.Fatalf("dropped QoS 0 resurrected: %d", got)
	}
	if got := payloads(s2.Pending("b", 0, 10)); fmt.Sprint(got) != "[000003 000004 000005 000008]" {
		t.Fatalf("b after restart: got %v", got)
	}
}

func TestDiskFull(t *testing.T) {
	s := openT(t, Config{Dir: t.TempDir()})
	if _, err := s.Append(msg("a", 1, 0)); err != nil {
		t.Fatal(err)
	}
	full := true
	s.mu.Lock()
	s.write = func(f *os.File, b []byte) (int, error) {
		if full {
			n, _ := f.Write(b[:len(b)/2]) // a partial write, then ENOSPC
			return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
		}
		return f.Write(b)
	}
	s.mu.Unlock()
	if _, err := s.Append(msg("a", 1, 1)); !errors.Is(err, ErrWrite) {
		t.Fatalf("append on full disk: got %v, want ErrWrite", err)
	}
	if got := s.Stats().WriteErrors.Load(); got != 1 {
		t.Fatalf("WriteErrors: got %d, want 1", got)
	}
	s.mu.Lock()
	full = false
	s.mu.Unlock()
	if _, err := s.Append(msg("a", 1, 2)); err != nil {
		t.Fatalf("append after space came back: %v", err)
	}
	dir := s.Dir()
	s.abandon()
	s2 := openT(t, Config{Dir: dir})
	if got := payloads(s2.Pending("a", 0, 10)); fmt.Sprint(got) != "[000000 000002]" {
		t.Fatalf("after restart: got %v, want [000000 000002]", got)
	}
	if got := s2.Stats().CorruptRegions.Load() + s2.Stats().TornTails.Load(); got != 0 {
		t.Fatalf("partial write was not truncated: %d damaged regions", got)
	}
}

func TestSegmentsReclaimedAndCompacted(t *testing.T) {
	dir := t.TempDir()
	one := int64(Record{Type: RecordPut, Msg: msg("a", 1, 0)}.encodedLen())
	s := openT(t, Config{Dir: dir, SegmentBytes: 4 * one, MaxBytes: 8 * one})
	// One slow message of "slow" pins the head segment.
	if _, err := s.Append(msg("slow", 1, 0)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		seq, err := s.Append(msg("fast", 1, i))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Ack("fast", seq); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Stats().Compactions.Load(); got == 0 {
		t.Fatalf("no compaction happened")
	}
	if got, max := s.Stats().DiskBytes.Load(), 2*8*one+4*one+200; got > max {
		t.Fatalf("DiskBytes: got %d, want <= %d", got, max)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	var total int64
	for _, f := range files {
		fi, _ := os.Stat(f)
		total += fi.Size()
	}
	if got := s.Stats().DiskBytes.Load(); got != total {
		t.Fatalf("DiskBytes gauge %d, files hold %d", got, total)
	}
	s.abandon()
	s2 := openT(t, Config{Dir: dir, SegmentBytes: 4 * one, MaxBytes: 8 * one})
	if got := payloads(s2.Pending("slow", 0, 10)); fmt.Sprint(got) != "[000000]" {
		t.Fatalf("slow after compaction+restart: got %v", got)
	}
	if got := len(s2.Pending("fast", 0, 1000)); got != 0 {
		t.Fatalf("fast after restart: %d resurrected", got)
	}
}

func TestWaitWakesAndOldestAge(t *testing.T) {
	clk := stacktest.NewClock()
	s := openT(t, Config{Dir: t.TempDir(), Clock: clk})
	ch := s.Wait("a")
	select {
	case <-ch:
		t.Fatal("woken before append")
	default:
	}
	if _, err := s.Append(msg("a", 1, 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("not woken by append")
	}
	clk.Advance(90 * time.Second)
	if got, want := s.OldestAge(), 90*time.Second; got != want {
		t.Fatalf("OldestAge: got %v, want %v", got, want)
	}
	n, _, oldest := s.Depth("a")
	if n != 1 || oldest.IsZero() {
		t.Fatalf("Depth: got %d %v", n, oldest)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(msg("a", 1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: got %v, want ErrClosed", err)
	}
}

func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no segments in %s", dir)
	}
	sort.Strings(files)
	// The last file is the (empty) active segment of the abandoned spool;
	// the records are in the newest non-empty one.
	for i := len(files) - 1; i >= 0; i-- {
		if fi, _ := os.Stat(files[i]); fi.Size() > 0 {
			return files[i]
		}
	}
	return files[len(files)-1]
}

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func TestBindSurvivesRestartAndCompaction(t *testing.T) {
	dir := t.TempDir()
	one := int64(Record{Type: RecordPut, Msg: msg("a", 2, 0)}.encodedLen())
	cfg := Config{Dir: dir, SegmentBytes: 4 * one, MaxBytes: 8 * one}
	s := openT(t, cfg)
	seq, err := s.Append(msg("slow", 2, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bind("slow", seq, 77, 1, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind("slow", seq, 77, 2, true); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ { // push the slow message through compaction
		q, err := s.Append(msg("fast", 1, i))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Ack("fast", q); err != nil {
			t.Fatal(err)
		}
	}
	if s.Stats().Compactions.Load() == 0 {
		t.Fatal("no compaction")
	}
	s.abandon()
	s2 := openT(t, cfg)
	got := s2.Pending("slow", 0, 10)
	if len(got) != 1 || got[0].PacketID != 77 || got[0].Stage != 2 {
		t.Fatalf("after restart: got %+v, want one message bound to packet 77 stage 2", got)
	}
}

func TestDuplicateQoS2AfterRestart(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir})
	m := Message{Endpoint: "a", Topic: "telemetry/x", QoS: 2, Payload: []byte("v1"), DevicePacketID: 9}
	seq, err := s.Append(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ack("a", seq); err != nil { // already relayed upstream
		t.Fatal(err)
	}
	s.abandon()
	s2 := openT(t, Config{Dir: dir})
	dup := m
	dup.Dup = true
	if _, err := s2.Append(dup); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("DUP retransmission after restart: got %v, want ErrDuplicate", err)
	}
	if got := s2.Stats().Duplicates.Load(); got != 1 {
		t.Fatalf("Duplicates: got %d, want 1", got)
	}
	for _, tt := range []struct {
		name string
		m    Message
	}{
		{"same id, DUP unset (a new message)", Message{Endpoint: "a", Topic: "telemetry/x", QoS: 2, Payload: []byte("v1"), DevicePacketID: 9}},
		{"same id, other payload", Message{Endpoint: "a", Topic: "telemetry/x", QoS: 2, Payload: []byte("v2"), DevicePacketID: 9, Dup: true}},
		{"other endpoint", Message{Endpoint: "b", Topic: "telemetry/x", QoS: 2, Payload: []byte("v1"), DevicePacketID: 9, Dup: true}},
	} {
		if _, err := s2.Append(tt.m); err != nil {
			t.Errorf("%s: got %v, want queued", tt.name, err)
		}
	}
}
