// Package nftables holds the example nftables ruleset for a fleetgate
// gateway host (gateway.nft); its tests check the file with `nft -c -f`
// and load it into a private network namespace to check what it lets
// through. There is no Go code to import: see deploy/README.md.
package nftables
