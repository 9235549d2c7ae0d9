#!/usr/bin/env bash
# Every prepared device run in one call that fits a lease: issue 20's stream
# scaling and Redis predict runs, then issue 14's merge latency, each under
# a time budget, within one 10-minute command. Build and gather here:
#
#   scripts/device/all.sh --gather     # static pulse, stream.test, traceslow and
#                                      # redis-server (with its libraries) into
#                                      # bin/device.tar.gz (~40 MB)
#
# then call the device with carry ["bin/device.tar.gz"] and the command
#
#   bash scripts/device/all.sh
#
# (timeout_s 600). Each part appends to its text file as it goes, so a part
# cut by its budget still reports what it measured. Results under $OUT, at
# most 8 files as the device returns them: scaling.txt, predict-redis.txt,
# merge.txt, all.txt (the timings of the parts) and results.tar.gz
# (profiles and logs).
#
# Budgets (seconds), overridable: SCALING_S=190 PREDICT_S=250 MERGE_S=100, at
# most 9 minutes in all (run it with timeout_s 600; here, on 2 cores, the
# whole took 5 minutes). Each part's text file reaches $OUT as the part
# ends. What each part does within them on 16 cores (sized from this VM's
# runs; the first device run should check): stream scaling at
# GOMAXPROCS 2, 4, 8, 16 with 4 partitions, the tasks alone (no Kafka) at
# 1-16 cores, 16 partitions at all cores, and a profiled run (1M events
# each); predict with Redis on its own two cores,
# three runs of 5k/10k/20k requests/s with 2 read slots (the target's three
# runs), then one traced run split by traceslow (NOTRACE=1 skips it); the
# merge latency at all cores, one round of the example with and without rfm:.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
if [[ "${1:-}" == --gather ]]; then
	set -e
	cd "$root"
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/pulse ./cmd/pulse
	CGO_ENABLED=0 go test -c -trimpath -ldflags '-s -w' -o bin/stream.test ./stream
	(cd tools/traceslow && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o ../../bin/traceslow .)
	dir=bin/redis
	mkdir -p "$dir/lib"
	src=$(command -v redis-server)
	cp "$src" "$dir/redis-server"
	ldd "$src" | awk '/=> \//{print $3}' | xargs -I{} cp {} "$dir/lib/"
	tar -czf bin/device.tar.gz bin/pulse bin/stream.test bin/traceslow bin/redis
	echo "bin/device.tar.gz: $(du -h bin/device.tar.gz | cut -f1)"
	exit 0
fi
if [[ -f $root/bin/device.tar.gz && ! -x $root/bin/stream.test ]]; then
	tar -C "$root" -xzf "$root/bin/device.tar.gz"
fi
final=${OUT:-$(mktemp -d)}
work=$(mktemp -d)
mkdir -p "$work/scaling" "$work/predict" "$work/merge"
cores=$(nproc)
log() { echo "$(date -u +%T) $*" | tee -a "$work/all.txt"; }
# A part's own timeouts put its commands in process groups of their own,
# out of reach of the budget's timeout: end whatever a cut part left.
cleanup() {
	pkill -f "$root/bin/pulse " 2>/dev/null
	pkill -f "$root/bin/stream.test" 2>/dev/null
	pkill -f "redis-server.*:${PORT:-6391}" 2>/dev/null
	sleep 1
}
log "cores=$cores $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) load $(cut -d' ' -f1-3 /proc/loadavg)"

log "stream scaling (budget ${SCALING_S:-190}s)"
OUT=$work/scaling PARTS=${PARTS:-16} timeout "${SCALING_S:-190}" bash "$root/scripts/device/stream-scaling.sh" "$root/bin/stream.test" >/dev/null 2>&1
log "stream scaling: rc=$?"
cleanup
cp "$work/scaling/scaling.txt" "$work/all.txt" "$final/" 2>/dev/null

log "predict with Redis (budget ${PREDICT_S:-250}s)"
OUT=$work/predict ROUNDS=${ROUNDS_PREDICT:-3} DURATION=${DURATION_PREDICT:-3s} SLOTS=${SLOTS:-2} NOTRACE=${NOTRACE:-} \
	timeout "${PREDICT_S:-250}" bash "$root/scripts/device/predict-redis.sh" >/dev/null 2>&1
log "predict with Redis: rc=$?"
cleanup
cp "$work/predict/predict-redis.txt" "$work/all.txt" "$final/" 2>/dev/null

log "merge latency (budget ${MERGE_S:-100}s)"
OUT=$work/merge ROUNDS=1 PROCS=${PROCS_MERGE:-$cores} \
	timeout "${MERGE_S:-100}" bash "$root/scripts/device/merge-latency.sh" >/dev/null 2>&1
log "merge latency: rc=$?"
cleanup
cp "$work/merge/merge.txt" "$work/all.txt" "$final/" 2>/dev/null

# The traces stay behind (traceslow's split of them is in predict-redis.txt):
# the device returns files of 16 MiB at most.
tar -C "$work" --exclude='trace-slots*' -czf "$final/results.tar.gz" .
ls -la "$final"
cat "$final"/*.txt
