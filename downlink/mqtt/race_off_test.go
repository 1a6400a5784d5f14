//go:build !race

package mqtt

// raceRSSFactor is 1 without the race detector: the bounds are the issue's.
const raceRSSFactor = 1
