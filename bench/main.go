// Command bench runs fleetgate's side-by-side benchmarks (issue 9): each
// pair alternates A/B in the same run, reports medians, prints a table
// and writes docs/BENCHMARKS.md plus docs/benchmarks.png.
package main

import (
	"os"

	"github.com/fleetgate/fleetgate/bench/suite"
)

func main() { os.Exit(suite.Main(os.Args[1:])) }
