#!/usr/bin/env bash
# The stream's scaling with cores and partitions, for a many-core machine
# (issue 20). Build the test binary here, then run this there:
#
#   CGO_ENABLED=0 go test -c -trimpath -ldflags '-s -w' -o bin/stream.test ./stream
#   scripts/device/stream-scaling.sh bin/stream.test   # OUT=dir for the results
#
# For each GOMAXPROCS and partition count it runs BenchmarkFullPath/uniform
# (the whole stream on kfake) and BenchmarkFloor/apply (fetch, decode and
# Apply alone) over 1M events, BenchmarkTaskScaling (16 tasks fed without
# Kafka) at 1, 2, 4, 8 and 16 cores, then profiles the full path at the widest
# setting (CPU, mutex and block profiles, self-symbolised: read them with
# `go tool pprof -top FILE` anywhere).
set -u
bin=$(realpath "${1:-bin/stream.test}")
out=${OUT:-$(mktemp -d)}
events=${PULSE_BENCH_EVENTS:-1000000}
cores=$(nproc)
echo "cores=$cores events=$events out=$out" | tee "$out/scaling.txt"
cd "$(dirname "$0")/../../stream"
bench() { # GOMAXPROCS PARTITIONS EXTRA...
	local p=$1 parts=$2
	shift 2
	echo "== GOMAXPROCS=$p partitions=$parts" | tee -a "$out/scaling.txt"
	GOMAXPROCS=$p PULSE_BENCH_PARTITIONS=$parts PULSE_BENCH_EVENTS=$events timeout 150 \
		"$bin" -test.run '^$' -test.benchtime 1x "$@" 2>&1 | grep -E '^(Benchmark|FAIL|panic)' | tee -a "$out/scaling.txt"
}
for p in 2 4 8 16; do
	((p <= cores)) || continue
	bench "$p" 4 -test.bench 'FullPath$/uniform|Floor$/apply$'
done
# The tasks alone, no Kafka: does the task code grow with cores? One
# process per width: with -benchtime 1x the first of a -test.cpu list is
# measured at the process's own GOMAXPROCS, not the one it names.
for p in 1 2 4 8 16; do
	((p <= cores)) || continue
	bench "$p" 16 -test.bench 'TaskScaling$'
done
for parts in ${PARTS:-8 16}; do
	bench "$cores" "$parts" -test.bench 'FullPath$/uniform|Floor$/apply$'
done
bench "$cores" 16 -test.bench 'FullPath$/uniform' -test.cpuprofile "$out/cpu.prof" \
	-test.mutexprofile "$out/mutex.prof" -test.blockprofile "$out/block.prof"
