package ctxsleep

import (
	"context"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	if !Sleep(ctx, 0) {
		t.Error("zero duration on a live context: false")
	}
	if !Sleep(ctx, time.Millisecond) {
		t.Error("1 ms on a live context: false")
	}
	cancel()
	if Sleep(ctx, 0) {
		t.Error("zero duration on a done context: true")
	}
	// A done context ends the wait at once: an hour would time the test out.
	if Sleep(ctx, time.Hour) {
		t.Error("an hour on a done context: true")
	}
}
