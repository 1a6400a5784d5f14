package dataplane

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// src4 and dst4 are an IPv4 header's addresses as netip.Addr, the type of
// the session table, the policies and the flow table (gVisor's accessors
// return tcpip.Address). The conversion copies four bytes; no allocation.
func src4(h header.IPv4) netip.Addr { return netip.AddrFrom4([4]byte(h.SourceAddressSlice())) }

func dst4(h header.IPv4) netip.Addr { return netip.AddrFrom4([4]byte(h.DestinationAddressSlice())) }
