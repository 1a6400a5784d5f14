package proxy

import "errors"

var (
	// ErrBadProxyURI is returned for a Proxy-Uri that is not coap://host[:port]/path.
	ErrBadProxyURI = errors.New("proxy: bad Proxy-Uri")
	// ErrUnknownHost is returned for a Proxy-Uri host that is neither an
	// IPv4 literal nor in Config.Hosts.
	ErrUnknownHost = errors.New("proxy: unknown Proxy-Uri host")
	// ErrConfig is returned by New for a missing Stack or Registry.
	ErrConfig = errors.New("proxy: Config needs Stack and Registry")
)
