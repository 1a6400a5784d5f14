package suite

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
)

// errSkip and errFatal end a measurement goroutine (runtime.Goexit) the
// way testing's SkipNow and FailNow end a test.
type scope struct {
	testing.TB // nil: any method not below panics (none is used by realpeer/netns)

	name     string
	mu       sync.Mutex
	cleanups []func()
	failed   bool
	skipped  bool
	msg      string
	ctx      context.Context
	cancel   context.CancelFunc
	dirs     []string
}

// runScoped runs fn with a testing.TB stand-in, so the test helpers of
// internal/netns, internal/realpeer and internal/testenv work in this
// command: Skip and Fatal end fn; cleanups run afterwards in reverse.
func runScoped(name string, fn func(t testing.TB)) (skipped bool, msg string, err error) {
	s := &scope{name: name}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				s.failed, s.msg = true, fmt.Sprintf("panic: %v", r)
			}
		}()
		fn(s)
	}()
	<-done
	s.cancel()
	s.runCleanups()
	for _, d := range s.dirs {
		_ = os.RemoveAll(d)
	}
	if s.failed {
		failedMu.Lock()
		failed = append(failed, fmt.Sprintf("%s: %s", name, s.msg))
		failedMu.Unlock()
		return false, s.msg, fmt.Errorf("%s: %s", name, s.msg)
	}
	return s.skipped, s.msg, nil
}

var (
	failedMu sync.Mutex
	failed   []string // every runScoped that failed, for -quick
)

func scopeFailures() []string {
	failedMu.Lock()
	defer failedMu.Unlock()
	return slices.Clone(failed)
}

func (s *scope) runCleanups() {
	for {
		s.mu.Lock()
		if len(s.cleanups) == 0 {
			s.mu.Unlock()
			return
		}
		f := s.cleanups[len(s.cleanups)-1]
		s.cleanups = s.cleanups[:len(s.cleanups)-1]
		s.mu.Unlock()
		func() {
			defer func() { _ = recover() }()
			f()
		}()
	}
}

func (s *scope) Helper()                    {}
func (s *scope) Name() string               { return s.name }
func (s *scope) Context() context.Context   { return s.ctx }
func (s *scope) Cleanup(f func())           { s.mu.Lock(); s.cleanups = append(s.cleanups, f); s.mu.Unlock() }
func (s *scope) Log(args ...any)            { logf("%s: %s", s.name, fmt.Sprint(args...)) }
func (s *scope) Logf(f string, args ...any) { logf("%s: %s", s.name, fmt.Sprintf(f, args...)) }
func (s *scope) Failed() bool               { s.mu.Lock(); defer s.mu.Unlock(); return s.failed }
func (s *scope) Skipped() bool              { return s.skipped }
func (s *scope) Error(args ...any)          { s.fail(fmt.Sprint(args...)) }
func (s *scope) Errorf(f string, args ...any) {
	s.fail(fmt.Sprintf(f, args...))
}
func (s *scope) Fail() { s.fail("failed") }
func (s *scope) fail(m string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed = true
	if s.msg == "" {
		s.msg = m
	}
}
func (s *scope) FailNow()                     { s.fail("failed"); runtime.Goexit() }
func (s *scope) Fatal(args ...any)            { s.fail(fmt.Sprint(args...)); runtime.Goexit() }
func (s *scope) Fatalf(f string, args ...any) { s.fail(fmt.Sprintf(f, args...)); runtime.Goexit() }
func (s *scope) SkipNow()                     { s.skipped = true; runtime.Goexit() }
func (s *scope) Skip(args ...any)             { s.skipped, s.msg = true, fmt.Sprint(args...); runtime.Goexit() }
func (s *scope) Skipf(f string, args ...any) {
	s.skipped, s.msg = true, fmt.Sprintf(f, args...)
	runtime.Goexit()
}
func (s *scope) Setenv(k, v string)  { _ = os.Setenv(k, v) }
func (s *scope) Chdir(string)        { panic("bench: Chdir not supported") }
func (s *scope) ArtifactDir() string { return s.TempDir() }
func (s *scope) Attr(string, string) {}
func (s *scope) Output() io.Writer   { return os.Stderr }
func (s *scope) TempDir() string {
	d, err := os.MkdirTemp("", "fgbench")
	if err != nil {
		s.Fatal(err)
	}
	s.mu.Lock()
	s.dirs = append(s.dirs, d)
	s.mu.Unlock()
	return d
}
