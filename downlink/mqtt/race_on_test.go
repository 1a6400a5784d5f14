//go:build race

package mqtt

// raceRSSFactor scales the attack tests' RSS bounds when the race detector
// is on (CI runs downlink/... with -race): it multiplies memory use 5-10x
// (Go's race detector documentation). The product's figures are those of
// a run without -race.
const raceRSSFactor = 8
