package mqtt

import (
	"strconv"
	"strings"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
)

// sessionStore is mochi's bbolt storage hook with one repair: v2.7.9
// stores an inflight message without its packet identifier (it is only in
// the key, "IFM_<client>:<id>"), so after a restart every restored message
// would carry id 0, overwrite the others in the client's inflight map and be
// sent with an invalid id. StoredInflightMessages puts the id back.
type sessionStore struct{ *bolt.Hook }

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
