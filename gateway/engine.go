package main

import (
	"log/slog"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/engine"
	"github.com/fleetgate/fleetgate/gateway/server"
)

// newEngine returns the session engine (IKE responder + ESP transport +
// L2TP LNS + PPP server, composed per session by uplink/l2tpipsec and plugged
// into the gateway by package engine) that the daemon runs.
func newEngine(cfg *config.Config, log *slog.Logger) server.Engine {
	_ = cfg // the engine reads the current configuration from server.Env
	return engine.New(engine.Config{Logger: log})
}
