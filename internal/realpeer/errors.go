package realpeer

import "errors"

// ErrDTLS is returned by CoAPClient when libcoap's output shows that the
// DTLS handshake or the request failed (the client exits 0 regardless).
var ErrDTLS = errors.New("realpeer: coap-client failed (judged by its output)")

// ErrNotReady is returned when a program did not reach its ready state in
// time.
var ErrNotReady = errors.New("realpeer: program not ready")
