package l2tpipsec

// IKEHalfOpen reports the IKE responder's Main Modes waiting for their
// third message and those past it not yet established (ike.Engine.HalfOpen),
// for the gateway's gauges; zero before the engine exists.
func (s *Server) IKEHalfOpen() (waiting, negotiating int) {
	if e := s.eng.Load(); e != nil {
		return e.HalfOpen()
	}
	return 0, 0
}
