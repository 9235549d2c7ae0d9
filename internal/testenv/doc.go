// Package testenv starts the real servers Pulse's tests talk to — redis-server,
// clickhouse-server and an Apache Kafka broker (KRaft, single node) — on free
// loopback ports, and names things so tests sharing those servers don't collide.
//
// It sits beside the tests of the packages that adapt the outside systems
// (kafka, featurestore, history) and of the services built on them; production
// code never imports it.
//
// A test package calls Main from its TestMain. Redis, ClickHouse and Kafka start
// one server per test binary, on first use, unless PULSE_TEST_REDIS,
// PULSE_TEST_CLICKHOUSE (with PULSE_TEST_CLICKHOUSE_HTTP) or PULSE_TEST_KAFKA name
// running ones: `make test` starts one set with cmd/testservers and shares it
// across all packages. StartRedis, StartClickHouse and StartKafka give a test a
// private server it may stop, kill and restart. StartProxy puts toxiproxy (run
// in the test's process) between a client and a server, for network faults:
// a black hole, latency, connections reset. PULSE_TEST_KAFKA_GC replaces
// the broker's collector flags (benchmarks compare G1 and ZGC with it).
//
// KStreamsPeerJar finds, or builds with Maven, the jar of the Kafka Streams
// peer that `pulse loadtest peer` compares Pulse with (loadtest/peers/kstreams).
//
// A missing server binary fails the test with a hint to run `make test-deps`;
// nothing is ever skipped.
package testenv
