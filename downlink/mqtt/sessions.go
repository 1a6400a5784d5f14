package mqtt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"go.etcd.io/bbolt"
)

// sessionBucket is the bbolt bucket mochi's hook keeps everything in (its
// default, set explicitly so the fresh-DB check below looks in the same
// place).
const sessionBucket = "mochi"

// sessionStore is mochi's bbolt storage hook with two repairs for v2.7.9:
//
//   - It stores an inflight message without its packet identifier (it is
//     only in the key, "IFM_<client>:<id>"), so after a restart every
//     restored message would carry id 0, overwrite the others in the
//     client's inflight map and be sent with an invalid id.
//     StoredInflightMessages puts the id back.
//   - Its StoredSysInfo reads the "SYS" key with a getter that logs every
//     miss at ERROR ("failed to get data", "key not found") before the
//     caller ignores the miss, so every start on a fresh DB logged a
//     spurious error. The record is first written on the first $SYS tick;
//     when the file had none at open, StoredSysInfo returns the zero value
//     without the lookup.
type sessionStore struct {
	*bolt.Hook
	noSysInfo bool
}

func newSessionStore(path string) (sessionStore, error) {
	has, err := hasSysInfo(path)
	if err != nil {
		return sessionStore{}, err
	}
	return sessionStore{Hook: new(bolt.Hook), noSysInfo: !has}, nil
}

// hasSysInfo reports whether the session DB at path already holds mochi's
// $SYS record. A missing or empty file has none.
func hasSysInfo(path string) (bool, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && fi.Size() == 0) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return false, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	has := false
	err = db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket([]byte(sessionBucket)); b != nil {
			has = b.Get([]byte(storage.SysInfoKey)) != nil
		}
		return nil
	})
	return has, err
}

// StoredInflightMessages implements the mochi storage hook.
func (s sessionStore) StoredInflightMessages() ([]storage.Message, error) {
	v, err := s.Hook.StoredInflightMessages()
	for i := range v {
		if j := strings.LastIndexByte(v[i].ID, ':'); j >= 0 && v[i].PacketID == 0 {
			if n, perr := strconv.ParseUint(v[i].ID[j+1:], 10, 16); perr == nil {
				v[i].PacketID = uint16(n)
			}
		}
	}
	return v, err
}

// StoredSysInfo implements the mochi storage hook.
func (s sessionStore) StoredSysInfo() (storage.SystemInfo, error) {
	if s.noSysInfo {
		return storage.SystemInfo{}, nil
	}
	return s.Hook.StoredSysInfo()
}
