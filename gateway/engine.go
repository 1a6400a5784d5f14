package main

import (
	"log/slog"

	"github.com/fleetgate/fleetgate/gateway/config"
	"github.com/fleetgate/fleetgate/gateway/server"
)

// newEngine returns the session engine (IKE responder + ESP transport +
// L2TP LNS + PPP server, composed per session) that the daemon runs.
//
// LEAD: this is the one place to plug the protocol stack in. Return a
// server.Engine whose Run binds cfg.Listen, and uses the *server.Env it is
// given (Admission.Allow before DH, Verifier / PSKFor, LocalSecret / RADIUS,
// AssignAddress, Register / Unregister, Router.FromSession). Until then the
// daemon runs the data plane, metrics and status without sessions.
func newEngine(cfg *config.Config, log *slog.Logger) server.Engine {
	_, _ = cfg, log
	return nil
}
