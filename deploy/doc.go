// Package deploy holds no code: its tests check the files a deployment
// runs on, which no Docker engine or Grafana runs here to try.
//
//   - docker-compose.yml, the Dockerfile and .dockerignore (compose_test.go):
//     images pinned, one Pulse image, each service's command a real
//     `pulse` command whose config passes `pulse validate` as mounted, its
//     health check and scrape job on the port it listens on.
//   - deploy/prometheus (prometheus_test.go): `promtool check` and `promtool
//     test rules`, every alert tested and given a runbook in
//     docs/operations.md.
//   - deploy/grafana (grafana_test.go): the provisioning and dashboards.
//   - scrape_test.go: a real Prometheus scrapes a running `pulse dev`, with
//     the rules loaded: every metric a dashboard or an alert names exists,
//     every panel's query answers, every rule evaluates, and the destination
//     alerts go off for a webhook and a destination whose receiver refuses.
//
// Adding a service: its block in docker-compose.yml, a pulse-<service> job
// in prometheus/prometheus.yml, grafana/dashboards/<service>.json,
// prometheus/rules/<service>.yml with prometheus/tests/<service>_test.yml,
// and runbooks in docs/operations.md; these tests find them by those names.
package deploy
