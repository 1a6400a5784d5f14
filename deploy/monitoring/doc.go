// Package monitoring holds fleetgate's Prometheus alert rules (alerts.yaml,
// with promtool unit tests in alerts_test.yaml) and Grafana dashboard
// (grafana-dashboard.json). Its Go test checks that every metric name and
// matched label value they use is one the daemons' code exports.
// There is no Go code to import: see deploy/README.md.
package monitoring
