package coap

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/pion/dtls/v3"
)

// The session state file (issue 19 item 4): after a bridge restart most
// sensors should need no new handshake. Close parks every session and
// writes the parked states here; New reads them back as parked sessions,
// so a device's next record (its CID) resumes its session at once. The
// file is also written every SaveInterval, for a bridge that is killed.
//
// At rest the file is AES-256-GCM (standard library) under a 32-byte key
// in its own file of mode 0600 (created if missing; refused if group or
// others can read it). A file that does not decrypt (another bridge's,
// modified, truncated) or does not parse is refused as a whole: counted in
// Stats.StateRefused, logged with the reason, no session restored.
//
// Each restored state skips stateSeqSkip record sequence numbers (the
// pion patch State.SkipLocalSequence): a state saved by the periodic save
// may be older than the last record the killed bridge sent, and reusing a
// sequence number with the same keys would reuse an AEAD nonce. The file
// is rewritten with the skipped numbers before any session is resumed, so
// a second restart from the same file cannot hand out the same numbers
// again; if it cannot be rewritten or removed, nothing is restored.
// Entries idle for IdleTimeout, of endpoints removed or whose PSK or
// certificate changed, are dropped (StateSkipped); at most
// MaxSavedSessions are read.

const (
	stateMagic   = "FGCS"
	stateVersion = 1
	// stateSeqSkip is far more records than one session sends between two
	// saves (2^32; a session has 2^48).
	stateSeqSkip = 1 << 32
	// maxStateEntry bounds one entry's exported pion state (a certificate
	// chain included).
	maxStateEntry = 64 << 10
	stateKeyLen   = 32
)

// ErrStateFile wraps every reason a session state file is refused.
var ErrStateFile = errors.New("coap: session state file refused")

// savedSession is one entry of the state file.
type savedSession struct {
	raddr                      string
	cid                        string
	started, lastSeen, lastAct int64
	bytesIn, bytesOut, rebinds uint64
	pskHash                    [sha256.Size]byte
	state                      []byte // pion State.MarshalBinary
}

// LoadOrCreateStateKey reads the 32-byte key at path, creating it (mode
// 0600, random) if it does not exist. A key file that group or others can
// read, or of the wrong size, is an error naming the file and the fix.
func LoadOrCreateStateKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := make([]byte, stateKeyLen)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("coap: session key file %s: %w", path, err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("coap: session key file %s: %w", path, err)
		}
		if _, err := f.Write(key); err != nil {
			f.Close()
			return nil, fmt.Errorf("coap: session key file %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("coap: session key file %s: %w", path, err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("coap: session key file %s: %w", path, err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("coap: session key file %s has mode %04o: group or others can read it; run chmod 600 %s (or remove it: sessions saved under it are then not restored)", path, m, path)
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("coap: session key file %s: %w", path, err)
	}
	if len(key) != stateKeyLen {
		return nil, fmt.Errorf("coap: session key file %s holds %d bytes, want %d; remove it and a new key is made at start (saved sessions are then not restored)", path, len(key), stateKeyLen)
	}
	return key, nil
}

func stateAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// sealSessions encodes and encrypts entries.
func sealSessions(key []byte, entries []savedSession) ([]byte, error) {
	a, err := stateAEAD(key)
	if err != nil {
		return nil, err
	}
	hdr := append([]byte(stateMagic), stateVersion)
	pt := binary.BigEndian.AppendUint32(nil, uint32(len(entries)))
	for _, e := range entries {
		pt = encodeSaved(pt, &e)
	}
	nonce := make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append(append(hdr, nonce...), a.Seal(nil, nonce, pt, hdr)...)
	return out, nil
}

// OpenSessions decrypts and decodes a state file; at most max entries. It
// never panics; every error wraps ErrStateFile.
func openSessions(key, b []byte, max int) ([]savedSession, error) {
	a, err := stateAEAD(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStateFile, err)
	}
	hl := len(stateMagic) + 1
	if len(b) < hl+a.NonceSize()+a.Overhead() || string(b[:len(stateMagic)]) != stateMagic {
		return nil, fmt.Errorf("%w: not a session state file", ErrStateFile)
	}
	if b[len(stateMagic)] != stateVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrStateFile, b[len(stateMagic)], stateVersion)
	}
	nonce := b[hl : hl+a.NonceSize()]
	pt, err := a.Open(nil, nonce, b[hl+a.NonceSize():], b[:hl])
	if err != nil {
		return nil, fmt.Errorf("%w: does not decrypt under this bridge's key file (written by another bridge, or modified)", ErrStateFile)
	}
	return decodeSessions(pt, max)
}

func encodeSaved(b []byte, e *savedSession) []byte {
	b = append(b, byte(len(e.raddr)))
	b = append(b, e.raddr...)
	b = append(b, byte(len(e.cid)))
	b = append(b, e.cid...)
	for _, v := range []uint64{uint64(e.started), uint64(e.lastSeen), uint64(e.lastAct), e.bytesIn, e.bytesOut, e.rebinds} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	b = append(b, e.pskHash[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.state)))
	return append(b, e.state...)
}

// decodeSessions parses the plaintext of a state file (bounded: at most
// max entries, each state at most maxStateEntry bytes).
func decodeSessions(b []byte, max int) ([]savedSession, error) {
	bad := func(what string) error { return fmt.Errorf("%w: malformed (%s)", ErrStateFile, what) }
	if len(b) < 4 {
		return nil, bad("short")
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	if int64(n) > int64(max) {
		return nil, fmt.Errorf("%w: %d sessions, more than the bound of %d", ErrStateFile, n, max)
	}
	str := func() (string, bool) {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return "", false
		}
		s := string(b[1 : 1+int(b[0])])
		b = b[1+int(b[0]):]
		return s, true
	}
	out := make([]savedSession, 0, min(int(n), 1024))
	for i := uint32(0); i < n; i++ {
		var e savedSession
		var ok bool
		if e.raddr, ok = str(); !ok {
			return nil, bad("address")
		}
		if e.cid, ok = str(); !ok {
			return nil, bad("connection id")
		}
		if len(b) < 6*8+sha256.Size+4 {
			return nil, bad("counters")
		}
		e.started, e.lastSeen, e.lastAct = int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:])), int64(binary.BigEndian.Uint64(b[16:]))
		e.bytesIn, e.bytesOut, e.rebinds = binary.BigEndian.Uint64(b[24:]), binary.BigEndian.Uint64(b[32:]), binary.BigEndian.Uint64(b[40:])
		copy(e.pskHash[:], b[48:])
		b = b[48+sha256.Size:]
		sl := binary.BigEndian.Uint32(b)
		b = b[4:]
		if sl > maxStateEntry || int64(sl) > int64(len(b)) {
			return nil, bad("state length")
		}
		e.state = append([]byte(nil), b[:sl]...)
		b = b[sl:]
		out = append(out, e)
	}
	if len(b) != 0 {
		return nil, bad("trailing bytes")
	}
	return out, nil
}

// writeFileAtomic writes b to path (mode 0600) through a temporary file
// and a rename, so a crash leaves the old file or the new one.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (s *Server) pskHash(identity []byte) (h [sha256.Size]byte) {
	if len(identity) == 0 {
		return h
	}
	if key, ok := s.cfg.Registry.PSK(string(identity)); ok {
		h = sha256.Sum256(key)
	}
	return h
}

// saveState writes every session (parked ones as parked, live ones as a
// snapshot of their conn) to the state file.
func (s *Server) saveState() error {
	if s.stateKey == nil {
		return nil
	}
	s.mu.Lock()
	ps := make([]*parkedSession, 0, len(s.parked))
	for _, p := range s.parked {
		ps = append(ps, p)
	}
	live := make([]*Session, 0, len(s.sessions))
	for _, x := range s.sessions {
		live = append(live, x)
	}
	s.mu.Unlock()
	entries := make([]savedSession, 0, len(ps)+len(live))
	for _, p := range ps {
		st := p.state
		b, err := st.MarshalBinary()
		if err != nil {
			continue
		}
		entries = append(entries, savedSession{raddr: p.raddr.String(), cid: p.cid, started: p.started.UnixNano(), lastSeen: p.lastSeen,
			lastAct: p.lastActive, bytesIn: p.bytesIn, bytesOut: p.bytesOut, rebinds: p.rebinds, pskHash: s.pskHash(st.IdentityHint), state: b})
	}
	for _, x := range live {
		c, ok := x.Conn.NetConn().(*conn)
		if !ok || c.gc == nil {
			continue
		}
		st, ok := c.Conn.ConnectionState()
		if !ok {
			continue
		}
		b, err := st.MarshalBinary()
		if err != nil {
			continue
		}
		s.guard.mu.Lock()
		cid := c.gc.cid
		s.guard.mu.Unlock()
		entries = append(entries, savedSession{raddr: c.Conn.RemoteAddr().String(), cid: cid, started: x.started.UnixNano(),
			lastSeen: x.lastSeen.Load(), lastAct: x.lastActive.Load(), bytesIn: x.BytesIn.Load(), bytesOut: x.BytesOut.Load(),
			rebinds: x.rebinds.Load(), pskHash: s.pskHash(st.IdentityHint), state: b})
	}
	if len(entries) > s.cfg.MaxSavedSessions {
		entries = entries[:s.cfg.MaxSavedSessions]
	}
	b, err := sealSessions(s.stateKey, entries)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.cfg.StateFile, b); err != nil {
		return fmt.Errorf("coap: session state file %s: %w", s.cfg.StateFile, err)
	}
	s.Stats.StateSaved.Store(uint64(len(entries)))
	return nil
}

// loadState restores the state file's sessions as parked sessions (New,
// before serving). Problems with the file are counted and logged; the
// server starts without them.
func (s *Server) loadState() {
	b, err := os.ReadFile(s.cfg.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil && len(b) > s.cfg.MaxSavedSessions*(maxStateEntry+512)+64 {
		err = fmt.Errorf("%w: %d bytes, over the bound for %d sessions", ErrStateFile, len(b), s.cfg.MaxSavedSessions)
	}
	var entries []savedSession
	if err == nil {
		entries, err = openSessions(s.stateKey, b, s.cfg.MaxSavedSessions)
	}
	if err != nil {
		s.refuseState(err)
		return
	}
	now := time.Now()
	var ps []*parkedSession
	for _, e := range entries {
		p, ok := s.restoreEntry(&e, now)
		if !ok {
			s.Stats.StateSkipped.Add(1)
			continue
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		s.parked[p.ep.Name] = p
		s.guard.mu.Lock()
		if p.cid != "" {
			s.guard.parked["cid:"+p.cid] = p
		}
		s.guard.parked[p.raddr.String()] = p
		s.guard.mu.Unlock()
	}
	// Single use: the skipped sequence numbers are on disk before any
	// session can send.
	if err := s.saveState(); err != nil {
		if rerr := os.Remove(s.cfg.StateFile); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			for _, p := range ps {
				s.guard.dropParked(p)
			}
			s.parked = map[string]*parkedSession{}
			s.refuseState(fmt.Errorf("%w: cannot rewrite (%v) or remove (%v) it after reading: restoring would risk reusing sequence numbers", ErrStateFile, err, rerr))
			return
		}
	}
	s.Stats.StateRestored.Add(uint64(len(ps)))
	s.log.Info("dtls sessions restored from the state file", "file", s.cfg.StateFile, "restored", len(ps), "skipped", s.Stats.StateSkipped.Load())
}

func (s *Server) refuseState(err error) {
	s.Stats.StateRefused.Add(1)
	s.stateErr = err
	s.log.Error("dtls session state file refused: devices will handshake again", "file", s.cfg.StateFile, "err", err.Error())
}

// restoreEntry checks one saved session against the registry and turns it
// into a parked session.
func (s *Server) restoreEntry(e *savedSession, now time.Time) (*parkedSession, bool) {
	if now.Sub(time.Unix(0, e.lastAct)) >= s.cfg.IdleTimeout {
		return nil, false
	}
	var st dtls.State
	if err := st.UnmarshalBinary(e.state); err != nil {
		return nil, false
	}
	ep, err := s.authenticate(st)
	if err != nil {
		return nil, false
	}
	if len(st.IdentityHint) > 0 && s.pskHash(st.IdentityHint) != e.pskHash {
		return nil, false // the PSK changed since
	}
	if err := st.SkipLocalSequence(stateSeqSkip); err != nil {
		return nil, false
	}
	raddr, err := net.ResolveUDPAddr("udp", e.raddr)
	if err != nil {
		return nil, false
	}
	return &parkedSession{ep: ep, state: st, suite: st.CipherSuiteID, raddr: raddr, cid: e.cid, started: time.Unix(0, e.started),
		lastSeen: e.lastSeen, lastActive: e.lastAct, bytesIn: e.bytesIn, bytesOut: e.bytesOut, rebinds: e.rebinds,
		ready: make(chan struct{})}, true
}

// StateError is why the state file was refused at New, or nil.
func (s *Server) StateError() error { return s.stateErr }
