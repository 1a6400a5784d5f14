// Package ctxsleep waits for a duration unless a context ends first: the
// pause of the bridge's CoAP forwarder between retries, of a simulated
// device between its steps and of the bench.
package ctxsleep

import (
	"context"
	"time"
)

// Sleep waits for d and reports true, or reports false as soon as ctx is
// done. d <= 0 returns at once, true unless ctx is already done.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
