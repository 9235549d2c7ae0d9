#!/usr/bin/env bash
# Installs what the tests run against: redis-server, clickhouse-server (Debian's
# 18.16), kcat, chromium and prometheus (with promtool, for deploy/'s alert
# rules and the scrape of pulse dev) from apt, and the Apache Kafka broker's jars from
# Maven Central into ${PULSE_CACHE:-$HOME/.cache/pulse}/kafka-<version>/libs, and
# builds the Kafka Streams peer of `pulse loadtest peer` (loadtest/peers/kstreams).
# Idempotent: when everything is present it only checks, in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep in step with deploy/kafka/pom.xml and testenv.KafkaVersion.
KAFKA_VERSION=4.2.0
CACHE="${PULSE_CACHE:-$HOME/.cache/pulse}"
KAFKA_LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"

say() { echo "test-deps: $*"; }

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# apt package -> a file it installs, to tell whether it is there.
declare -A APT=(
	[redis-server]=/usr/bin/redis-server
	[clickhouse-server]=/usr/sbin/clickhouse-server
	[clickhouse-client]=/usr/bin/clickhouse-client
	[kcat]=/usr/bin/kcat
	[chromium]=/usr/bin/chromium
	[prometheus]=/usr/bin/promtool
	[maven]=/usr/bin/mvn
	[openjdk-17-jre-headless]=/usr/lib/jvm/java-17-openjdk-amd64/bin/java
)
missing=()
for pkg in "${!APT[@]}"; do
	if [ ! -x "${APT[$pkg]}" ]; then
		# Any Java 17 or newer will do for Kafka 4.
		if [ "$pkg" = openjdk-17-jre-headless ] && command -v java >/dev/null &&
			[ "$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)" -ge 17 ]; then
			continue
		fi
		missing+=("$pkg")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]} with apt-get"
	sudo_ apt-get update -q
	sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
	say "apt packages present (redis-server clickhouse-server clickhouse-client kcat chromium prometheus maven java)"
fi
# The Debian packages start services where an init system runs (prometheus
# too, on :9090); the tests start their own servers on free ports and need
# none of them.

if ls "$KAFKA_LIBS"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 && [ -f "$KAFKA_LIBS/.complete" ]; then
	say "Kafka $KAFKA_VERSION jars present in $KAFKA_LIBS"
else
	say "fetching Kafka $KAFKA_VERSION jars with Maven into $KAFKA_LIBS"
	rm -rf "$KAFKA_LIBS"
	mkdir -p "$KAFKA_LIBS"
	# Maven 3.8 prints colour resets even in batch mode; strip them.
	mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies \
		-Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" 2>&1 |
		sed 's/\x1b\[[0-9;]*m//g'
	touch "$KAFKA_LIBS/.complete"
	say "fetched $(ls "$KAFKA_LIBS"/*.jar | wc -l) jars"
fi

# The Kafka Streams peer of `pulse loadtest peer` (loadtest/peers/kstreams),
# one shaded jar, rebuilt when a source is newer than it; offline when the
# local Maven repository already holds its dependencies (a few seconds'
# compile), else online. internal/testenv.KStreamsPeerJar builds it the same way.
PEER_DIR=loadtest/peers/kstreams
PEER_JAR=$PEER_DIR/target/pulse-peer-kstreams.jar
if [ -f "$PEER_JAR" ] && [ -z "$(find "$PEER_DIR" -path "$PEER_DIR/target" -prune -o -type f -newer "$PEER_JAR" -print)" ]; then
	say "Kafka Streams peer present ($PEER_JAR)"
else
	say "building the Kafka Streams peer ($PEER_JAR) with Maven"
	if ! mvn -o -q -B -f "$PEER_DIR/pom.xml" package >/dev/null 2>&1; then
		mvn -q -B -f "$PEER_DIR/pom.xml" package 2>&1 | sed 's/\x1b\[[0-9;]*m//g'
	fi
	[ -f "$PEER_JAR" ] || { say "the peer's build left no $PEER_JAR"; exit 1; }
fi

say "ready: $(redis-server --version | cut -d' ' -f1-3), clickhouse-server $(dpkg-query -W -f='${Version}' clickhouse-server 2>/dev/null || echo '?'), Kafka $KAFKA_VERSION"

# The real @segment/analytics-node, for ingest's compatibility test.
COMPAT=ingest/testdata/compat
if [ -f "$COMPAT/node_modules/@segment/analytics-node/package.json" ]; then
	say "@segment/analytics-node present"
else
	say "installing @segment/analytics-node with npm"
	(cd "$COMPAT" && npm ci --no-audit --no-fund --silent)
fi

# The real Segment, Amplitude and PostHog Node SDKs (ingest/testdata/compat/package.json).
if [ -f "$COMPAT/node_modules/@amplitude/analytics-node/package.json" ] && [ -f "$COMPAT/node_modules/posthog-node/package.json" ]; then
	say "@amplitude/analytics-node and posthog-node present"
else
	say "installing the Node SDKs with npm"
	(cd "$COMPAT" && npm ci --no-audit --no-fund --silent)
fi

# The real Python SDKs (amplitude-analytics, posthog, segment-analytics-python)
# in a venv of their own, reused while requirements.txt is unchanged.
SDK_VENV="$CACHE/venv-sdk"
if [ -x "$SDK_VENV/bin/python" ] && cmp -s "$COMPAT/requirements.txt" "$SDK_VENV/.requirements"; then
	say "Python SDKs present in $SDK_VENV"
else
	say "installing the Python SDKs into $SDK_VENV"
	rm -rf "$SDK_VENV"
	"${PYTHON:-python3}" -m venv "$SDK_VENV"
	"$SDK_VENV/bin/pip" install -q --disable-pip-version-check -r "$COMPAT/requirements.txt"
	cp "$COMPAT/requirements.txt" "$SDK_VENV/.requirements"
fi
