//go:build !race

package coap_test

// raceRSSFactor is 1 without the race detector: the bounds are the issue's.
const raceRSSFactor = 1
