package device

import (
	"math/rand/v2"

	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/fleetgate/fleetgate/firmware-sim/report"
)

type pool_Message = pool.Message //nolint:revive // short alias for the observe callback

type statsHolder struct{ s report.Stats }

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 2)) }
