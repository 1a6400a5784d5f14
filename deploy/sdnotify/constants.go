package sdnotify

import "time"

// EnvSocket is the environment variable systemd sets for Type=notify
// services (sd_notify(3)).
const EnvSocket = "NOTIFY_SOCKET"

// Well-known assignments (sd_notify(3), "Well-known assignments").
const (
	// StateReady: service start-up (or reload) is finished.
	StateReady = "READY=1"
	// StateReloading: the service is reloading its configuration.
	StateReloading = "RELOADING=1"
	// StateStopping: the service is beginning its shutdown.
	StateStopping = "STOPPING=1"
)

// writeTimeout bounds one datagram write.
const writeTimeout = time.Second
