package archtest

// Module is the import path of the module the rules apply to.
const Module = "github.com/fleetgate/fleetgate"

// Rules are the import directions docs/ARCHITECTURE.md states ("Import
// direction"). Arrows point down only: daemons and tools → protocol cores
// → link/helpers.
var Rules = []Rule{
	{
		Name:      "protocol cores never depend on a daemon or a tool",
		From:      []string{"uplink", "downlink", "ipstack"},
		Forbidden: []string{"gateway", "bridge", "firmware-sim", "bench", "demo", "e2e", "deploy"},
		Tests:     true,
	},
	{
		Name:      "the gateway does not depend on the bridge",
		From:      []string{"gateway"},
		Forbidden: []string{"bridge", "firmware-sim", "bench", "demo", "e2e"},
	},
	{
		Name:      "the bridge does not depend on the gateway",
		From:      []string{"bridge"},
		Forbidden: []string{"gateway", "firmware-sim", "bench", "demo", "e2e"},
	},
	{
		Name:      "the firmware simulator depends on protocol cores only",
		From:      []string{"firmware-sim"},
		Forbidden: []string{"gateway", "bridge", "bench", "demo", "e2e"},
		Tests:     true,
	},
}
