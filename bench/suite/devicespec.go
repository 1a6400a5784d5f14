package suite

import (
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/fleetgate/fleetgate/downlink/registry"
)

// deviceChildSpec is what a device child (helper-devices,
// helper-coap-devices) reads from its spec
// state-file:start:count:source-ip:dst-host:dst-port[:more...]: its slice
// of the fleet, the address it dials from and the one it dials.
type deviceChildSpec struct {
	devs []fleetDev
	src  net.IP
	dst  *net.UDPAddr
	rest []string // the fields after dst-port
}

// parseDeviceChildSpec parses spec, which must have exactly fields fields.
// A non-zero code is the child's exit code (2: bad spec, 1: unreadable
// state file), already logged under who.
func parseDeviceChildSpec(who, spec string, fields int) (deviceChildSpec, int) {
	f := strings.Split(spec, ":")
	if len(f) != fields || fields < 6 {
		logf("%s: bad spec %q", who, spec)
		return deviceChildSpec{}, 2
	}
	b, err := os.ReadFile(f[0])
	if err != nil {
		logf("%s: %v", who, err)
		return deviceChildSpec{}, 1
	}
	st, err := registry.ParseState(b)
	if err != nil {
		logf("%s: %v", who, err)
		return deviceChildSpec{}, 1
	}
	start, _ := strconv.Atoi(f[1])
	cnt, _ := strconv.Atoi(f[2])
	src := net.ParseIP(f[3])
	dst, err := net.ResolveUDPAddr("udp4", net.JoinHostPort(f[4], f[5]))
	if err != nil || src == nil || start < 0 || cnt < 0 || start+cnt > len(st.Endpoints) {
		logf("%s: bad spec %q", who, spec)
		return deviceChildSpec{}, 2
	}
	devs := make([]fleetDev, cnt)
	for i := range devs {
		e := st.Endpoints[start+i]
		devs[i] = fleetDev{Name: e.Name, Key: string(e.PSK), Addr: e.Addr}
	}
	return deviceChildSpec{devs: devs, src: src, dst: dst, rest: f[6:]}, 0
}
