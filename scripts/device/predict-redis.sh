#!/usr/bin/env bash
# Predict with the Redis store against the same run's one-read floor, with
# Redis on cores of its own (issue 20's first target), for a many-core
# machine that reaches no registry. Build and gather here, run it there:
#
#   CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/pulse ./cmd/pulse
#   (cd tools/traceslow && CGO_ENABLED=0 go build -trimpath -o ../../bin/traceslow .)
#   scripts/device/predict-redis.sh --gather   # redis-server and its libraries into
#                                              # bin/redis, all of it into bin/device.tar.gz
#   scripts/device/predict-redis.sh            # there (carry bin/device.tar.gz, ~30 MB;
#                                              # OUT=dir for the results)
#
# About 7 minutes with the defaults (ROUNDS=2 or SLOTS=8 for less; NOTRACE=1
# skips the traced run).
#
# Redis runs on the last REDIS_CORES cores (default 2), Pulse's load test
# (scorer, floor, bare handler and load generator in one process) on the
# others. For each read-slot count in SLOTS (default "2 8") it runs three
# rounds of 5k/10k/20k requests/s, then one traced run of the scorer's side
# and tools/traceslow over it: where the slowest 1% of predictions waited.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
if [[ "${1:-}" == --gather ]]; then
	dir=$root/bin/redis
	mkdir -p "$dir/lib"
	src=$(command -v redis-server)
	cp "$src" "$dir/redis-server"
	ldd "$src" | awk '/=> \//{print $3}' | xargs -I{} cp {} "$dir/lib/"
	tar -C "$root" -czf "$root/bin/device.tar.gz" bin/pulse bin/traceslow bin/redis
	echo "gathered $(ls "$dir/lib" | wc -l) libraries beside $dir/redis-server; $(du -h "$root/bin/device.tar.gz" | cut -f1) in bin/device.tar.gz"
	exit 0
fi
if [[ ! -x $root/bin/pulse && -f $root/bin/device.tar.gz ]]; then
	tar -C "$root" -xzf "$root/bin/device.tar.gz"
fi
pulse=${PULSE:-$root/bin/pulse}
traceslow=${TRACESLOW:-$root/bin/traceslow}
redisdir=${REDIS_DIR:-$root/bin/redis}
out=${OUT:-$(mktemp -d)}
cores=$(nproc)
rcores=${REDIS_CORES:-2}
slots=${SLOTS:-2 8}
rounds=${ROUNDS:-3}
duration=${DURATION:-4s}
port=${PORT:-6391}
((cores > rcores)) || { echo "need more than $rcores cores (have $cores)"; exit 1; }
redis_cpus="$((cores - rcores))-$((cores - 1))"
pulse_cpus="0-$((cores - rcores - 1))"
echo "cores=$cores redis on $redis_cpus, pulse on $pulse_cpus, slots: $slots, out=$out" | tee "$out/predict-redis.txt"

redis_bin=$redisdir/redis-server
[[ -x "$redis_bin" ]] || redis_bin=$(command -v redis-server)
LD_LIBRARY_PATH="$redisdir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" taskset -c "$redis_cpus" \
	"$redis_bin" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --protected-mode no \
	>"$out/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null; sleep 0.5; kill -9 $redis_pid 2>/dev/null' EXIT
for _ in $(seq 50); do
	(exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
	sleep 0.1
done

run() { # SLOTS EXTRA...
	local n=$1
	shift
	taskset -c "$pulse_cpus" "$pulse" loadtest predict -embedded -store redis -redis "127.0.0.1:$port" \
		-floor -log=false -rates 5000,10000,20000 -duration "$duration" -rounds 2 -warmup 1s \
		-connections 128 -redis-slots "$n" "$@" 2>&1
}
for n in $slots; do
	for r in $(seq "$rounds"); do
		echo "== slots=$n round=$r $(date -u +%T)" | tee -a "$out/predict-redis.txt"
		run "$n" | grep -E 'req/s|x baseline|CPU per|cache' | tee -a "$out/predict-redis.txt"
	done
	[[ -n "${NOTRACE:-}" ]] && continue
	echo "== slots=$n traced (the traced side is slower: read the split, not the p99)" | tee -a "$out/predict-redis.txt"
	run "$n" -trace "$out/trace-slots$n" >"$out/traced-slots$n.txt"
	for f in "$out"/trace-slots"$n".*; do
		[[ -x "$traceslow" ]] && "$traceslow" "$f" | tee -a "$out/predict-redis.txt"
	done
done
