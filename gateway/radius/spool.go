package radius

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Spool defaults.
const (
	// DefaultSpoolMax bounds the records waiting for a server.
	DefaultSpoolMax = 100000
	// spoolRetryMin and spoolRetryMax bound the wait between attempts
	// while no server answers (doubling, as RFC 2866 §2 leaves the
	// retransmission policy to the client).
	spoolRetryMin = time.Second
	spoolRetryMax = 30 * time.Second
)

var spoolBucket = []byte("acct")

// SpoolStats are the accounting spool's counters.
type SpoolStats struct {
	// Queued is how many records wait now.
	Queued atomic.Int64
	// Submitted, Delivered: records taken and acknowledged by a server.
	Submitted, Delivered atomic.Uint64
	// Dropped counts records refused because the spool was full;
	// Rejected those a server answered with something other than an
	// Accounting-Response (retrying cannot help).
	Dropped, Rejected atomic.Uint64
	// Delayed counts records delivered with Acct-Delay-Time > 0.
	Delayed atomic.Uint64
}

// spooled is one record in the queue, with the time it was created.
type spooled struct {
	Rec     AcctRecord `json:"rec"`
	Created time.Time  `json:"created"`
}

// Spool delivers accounting records in order, at least once: Submit puts
// a record at the tail of a FIFO (a bbolt file when a path is given, so
// nothing is lost across a gateway restart; memory otherwise) and one
// goroutine sends the head to the accounting pool until a server
// acknowledges it, with Acct-Delay-Time set to how long it has waited
// (RFC 2866 §5.2). Submit never waits for the network.
type Spool struct {
	c   *Client
	db  *bolt.DB // nil: memory only
	max int
	log *slog.Logger
	now func() time.Time
	// Stats are the spool's counters.
	Stats SpoolStats

	kick chan struct{}
	done chan struct{}

	mu  sync.Mutex
	mem []spooled // memory queue when db is nil
}

// OpenSpool opens (or creates) the spool file at path ("" for a memory
// spool) for c's accounting servers; max bounds it (DefaultSpoolMax).
func OpenSpool(c *Client, path string, max int, log *slog.Logger) (*Spool, error) {
	if max <= 0 {
		max = DefaultSpoolMax
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Wall-clock time, not the client's clock: records and their
	// Acct-Delay-Time outlive the process.
	s := &Spool{c: c, max: max, log: log, now: time.Now, kick: make(chan struct{}, 1), done: make(chan struct{})}
	if path != "" {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
		if err != nil {
			return nil, fmt.Errorf("radius: accounting spool %s: %w", path, err)
		}
		n := 0
		err = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(spoolBucket)
			if err != nil {
				return err
			}
			c := b.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				n++
			}
			return nil
		})
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("radius: accounting spool %s: %w", path, err)
		}
		s.db = db
		s.Stats.Queued.Store(int64(n))
		if n > 0 {
			log.Info("radius accounting spool has records from before the restart", "records", n, "path", path)
		}
	}
	return s, nil
}

// Submit queues r for delivery. It fails only when the spool is full or
// its file cannot be written (the record is then lost and counted).
func (s *Spool) Submit(r AcctRecord) error {
	if s.Stats.Queued.Load() >= int64(s.max) {
		s.Stats.Dropped.Add(1)
		s.log.Warn("radius accounting spool full: record dropped", "max", s.max, "session", r.SessionID, "status", int(r.Status))
		return ErrSpoolFull
	}
	e := spooled{Rec: r, Created: s.now()}
	if s.db == nil {
		s.mu.Lock()
		s.mem = append(s.mem, e)
		s.mu.Unlock()
	} else {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		err = s.db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(spoolBucket)
			seq, err := bk.NextSequence()
			if err != nil {
				return err
			}
			return bk.Put(binary.BigEndian.AppendUint64(nil, seq), b)
		})
		if err != nil {
			s.Stats.Dropped.Add(1)
			s.log.Error("radius accounting spool write failed: record dropped", "session", r.SessionID, "err", err)
			return fmt.Errorf("radius: spool: %w", err)
		}
	}
	s.Stats.Queued.Add(1)
	s.Stats.Submitted.Add(1)
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return nil
}

// ErrSpoolFull is returned by Submit when the spool holds its maximum.
var ErrSpoolFull = errors.New("radius: accounting spool full")

// head returns the oldest record and its key (nil when empty).
func (s *Spool) head() (key []byte, e spooled, ok bool) {
	if s.db == nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.mem) == 0 {
			return nil, e, false
		}
		return []byte{}, s.mem[0], true
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(spoolBucket).Cursor().First()
		if k == nil {
			return nil
		}
		if err := json.Unmarshal(v, &e); err != nil {
			// A record we cannot read is dropped, not retried forever.
			s.log.Error("radius accounting spool: unreadable record dropped", "err", err)
			key, ok = append([]byte(nil), k...), false
			return nil
		}
		key, ok = append([]byte(nil), k...), true
		return nil
	})
	return key, e, ok
}

func (s *Spool) pop(key []byte) {
	if s.db == nil {
		s.mu.Lock()
		if len(s.mem) > 0 {
			s.mem = s.mem[1:]
		}
		s.mu.Unlock()
	} else if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(spoolBucket).Delete(key) }); err != nil {
		s.log.Error("radius accounting spool: delete failed (record may be sent twice)", "err", err)
		return
	}
	s.Stats.Queued.Add(-1)
}

// Run delivers records until ctx is done; then it tries for at most
// drain more to deliver what is queued (the Stops of a shutdown), and
// returns. Records left stay in the spool file for the next start.
func (s *Spool) Run(ctx context.Context, drain time.Duration) {
	defer close(s.done)
	wait := spoolRetryMin
	for {
		if ctx.Err() != nil {
			s.flush(drain)
			return
		}
		key, e, ok := s.head()
		if key == nil {
			select {
			case <-ctx.Done():
			case <-s.kick:
			}
			continue
		}
		if !ok {
			s.pop(key)
			continue
		}
		if s.send(ctx, e) {
			s.pop(key)
			wait = spoolRetryMin
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		// No longer than a dead server is skipped: a revived server
		// gets the backlog at once.
		wait = min(2*wait, spoolRetryMax, max(s.c.cfg.DeadTime, spoolRetryMin))
	}
}

// send delivers one record; false means no server took it (retry later).
func (s *Spool) send(ctx context.Context, e spooled) bool {
	r := e.Rec
	r.Delay = s.now().Sub(e.Created)
	if r.Delay < 0 {
		r.Delay = 0
	}
	err := s.c.Account(ctx, r)
	var uc *unexpectedCode
	switch {
	case err == nil:
		s.Stats.Delivered.Add(1)
		if r.Delay >= time.Second {
			s.Stats.Delayed.Add(1)
		}
		return true
	case errors.As(err, &uc):
		s.Stats.Rejected.Add(1)
		s.log.Warn("radius accounting record refused by the server: dropped", "session", r.SessionID, "err", err)
		return true
	}
	return false
}

func (s *Spool) flush(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for ctx.Err() == nil {
		key, e, ok := s.head()
		if key == nil {
			return
		}
		if ok && !s.send(ctx, e) {
			break
		}
		s.pop(key)
	}
	if n := s.Stats.Queued.Load(); n > 0 {
		if s.db == nil {
			s.log.Warn("radius accounting records lost at shutdown (no acct_spool file)", "records", n)
		} else {
			s.log.Info("radius accounting records kept in the spool for the next start", "records", n)
		}
	}
}

// Close waits for Run to return (if it ran) and closes the file.
func (s *Spool) Close(ran bool) error {
	if ran {
		<-s.done
	}
	if s.db != nil {
		return s.db.Close()
	}
	return nil
}
