#!/usr/bin/env bash
# Issue 14's last target on a many-core machine: an identify's merge
# visible within 100 ms p99 of its 200 at 10k events/s, beside the same
# run's one-event trip and `pulse loadtest freshness` (p99 < 50 ms). The
# device has no Java, so Kafka is kfake, in process, as in `pulse dev`.
# Build here, run it there (carry bin/pulse):
#
#   CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/pulse ./cmd/pulse
#   scripts/device/merge-latency.sh            # OUT=dir for the results
#
# For the example as shipped (a) and without its rfm: block (c), at
# GOMAXPROCS 2 (this VM's width) and all cores: freshness, then identity at
# 20 and 100 merges/s; ROUNDS (default 2) of each. About 4 minutes with the
# defaults on 16 cores. PROCS="16" runs one GOMAXPROCS pass only.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
pulse=${PULSE:-$root/bin/pulse}
out=${OUT:-$(mktemp -d)}
rounds=${ROUNDS:-2}
cores=$(nproc)
work=$(mktemp -d)
mkdir -p "$work/a" "$work/c"
cp "$root/examples/ecommerce/pulse.yaml" "$work/a/pulse.yaml"
# c: the same without the top-level rfm: block.
awk '/^rfm:/{skip=1; next} /^[^ #]/{skip=0} !skip' "$root/examples/ecommerce/pulse.yaml" >"$work/c/pulse.yaml"
for d in a c; do ln -s "$root/examples/ecommerce/models" "$work/$d/models"; done
echo "cores=$cores rounds=$rounds out=$out" | tee "$out/merge.txt"
cd "$work"
for procs in ${PROCS:-2 $cores}; do
	for r in $(seq "$rounds"); do
		for c in c a; do
			echo "== GOMAXPROCS=$procs config=$c round=$r freshness" | tee -a "$out/merge.txt"
			GOMAXPROCS=$procs timeout 90 "$pulse" loadtest freshness -config "$c/pulse.yaml" -duration 10s 2>&1 |
				grep -E 'HTTP 200 -> store|ingest \(HTTP|load average' | tee -a "$out/merge.txt"
			for m in 20 100; do
				echo "== GOMAXPROCS=$procs config=$c round=$r identity merges=$m" | tee -a "$out/merge.txt"
				GOMAXPROCS=$procs timeout 90 "$pulse" loadtest identity -config "$c/pulse.yaml" -duration 10s -merges "$m" 2>&1 |
					grep -E 'served|identify 200|merged /|txn_seconds|load average' | tee -a "$out/merge.txt"
			done
		done
	done
done
