package backfill

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// BenchmarkBackfillFeatures10M is `pulse backfill features` (20 features,
// into Pebble) over 10 million events of 100k users, against a plain
// `SELECT <the replay's columns> FROM events FORMAT Null` of the same rows
// in the same run. The load (generated inside ClickHouse with INSERT ...
// SELECT FROM numbers) takes a while, so it runs only with PULSE_BENCH_10M=1:
//
//	PULSE_BENCH_10M=1 go test -run '^$' -bench BackfillFeatures10M -benchtime 1x -timeout 30m ./backfill
//
// PULSE_BENCH_EVENTS changes the event count (for quicker tries).
// PULSE_BENCH_CPUPROFILE=FILE profiles the first round's replay alone.
// PULSE_BENCH_DB names a database to keep between runs (with
// PULSE_TEST_CLICKHOUSE pointing at a server that outlives them): the
// events are loaded only when it does not hold them already.
// Metrics: events/s of the replay, the scan's and the replay's seconds,
// x_scan (replay time / scan time; the target is <= 3), the scan of the
// whole event (scan_all_s, x_scan_all: the columns the replay read before
// it read only what the features need), the whole-event scan sorted by
// (entity, time) as the replay needs it, the replay's read-only time
// (history.Reader with no aggregation or store writes) and the replay's
// CPU seconds in this process (replay_cpu_s; steadier than wall time on a
// shared machine). With -benchtime Nx, the times are the best of N
// rounds of a scan and a replay.
func BenchmarkBackfillFeatures10M(b *testing.B) {
	if os.Getenv("PULSE_BENCH_10M") != "1" {
		b.Skip("loads 10M events into ClickHouse: set PULSE_BENCH_10M=1 to run")
	}
	events := 10_000_000
	if s := os.Getenv("PULSE_BENCH_EVENTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("PULSE_BENCH_EVENTS: %v", err)
		}
		events = n
	}
	const users = 100_000
	native, httpAddr := testenv.ClickHouse(b)
	db, keep := os.Getenv("PULSE_BENCH_DB"), true
	if db == "" {
		db, keep = testenv.ClickHouseDatabase(b), false
	}
	yaml, _ := benchFeatures()
	cfg, err := config.Parse([]byte(yaml), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	cfg.ClickHouse.Addr, cfg.ClickHouse.Database = native, db
	cfg.Store.Path = b.TempDir()
	conn, err := history.Open(cfg.ClickHouse)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	if err := history.Migrate(ctx, conn, db); err != nil {
		b.Fatal(err)
	}

	end := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	if !keep || !holds(ctx, b, conn, db, events) {
		if keep {
			if err := conn.Exec(ctx, fmt.Sprintf("TRUNCATE TABLE %s.events", db)); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		if err := conn.Exec(ctx, load10M(db, events, users, end)); err != nil {
			b.Fatal(err)
		}
		b.Logf("loaded %d events of %d users in %s", events, users, time.Since(start).Round(time.Millisecond))
		// Merge the insert's parts now, as a history table mostly is: else
		// the background merges of the load compete with what is measured.
		start = time.Now()
		if err := conn.Exec(ctx, fmt.Sprintf("OPTIMIZE TABLE %s.events FINAL", db)); err != nil {
			b.Fatal(err)
		}
		b.Logf("merged in %s", time.Since(start).Round(time.Millisecond))
	}

	r := history.NewReader(conn, db)
	set, _, err := compile(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	if m := mapsFor(set); m != (history.Maps{Properties: true}) {
		b.Fatalf("the features read maps %+v: update the scan's columns", m)
	}
	// The columns history.Reader.EachEntity selects for these features,
	// and the whole event (what the replay read before it read only the
	// fields the features need).
	const cols = "entity_id, message_id, cityHash64(message_id), timestamp_ms, received_at_ms, event, properties"
	const allCols = "entity_id, message_id, type, event, name, user_id, anonymous_id, previous_id, group_id, " +
		"timestamp_ms, received_at_ms, sent_at_ms, original_timestamp_ms, feature_set, properties, '', '', ''"

	// The baseline: the same rows and columns, read and dropped by the server.
	scan := func(cols string) time.Duration {
		start := time.Now()
		if err := httpQuery(httpAddr, fmt.Sprintf("SELECT %s FROM %s FORMAT Null", cols, r.Table("events"))); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	scan(allCols) // warm the page cache as the replay will find it
	scanTime, scanAllTime := scan(cols), scan(allCols)
	// The replay's own query shape: one sort of all rows by entity and time.
	start := time.Now()
	if err := httpQuery(httpAddr, fmt.Sprintf("SELECT %s FROM %s ORDER BY entity_id, timestamp_ms, received_at_ms, message_id FORMAT Null", allCols, r.Table("events"))); err != nil {
		b.Fatal(err)
	}
	sortTime := time.Since(start)

	// Reading only, for the breakdown.
	start = time.Now()
	read := 0
	if err := r.EachEntity(ctx, replayFilter(set, history.EventFilter{Until: end}), func(_ string, evs []*event.Event) error {
		read += len(evs)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	readTime := time.Since(start)
	if read != events {
		b.Fatalf("read %d events, want %d", read, events)
	}

	store, err := featurestore.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	// Each round scans, then replays; on a shared machine the others' load
	// comes and goes, so -benchtime Nx reports the best of N rounds of
	// each (and logs every round).
	// PULSE_BENCH_CPUPROFILE: a CPU profile of the first round's replay
	// alone (-cpuprofile also holds the load, the scans and the read-only
	// pass).
	var prof *os.File
	if path := os.Getenv("PULSE_BENCH_CPUPROFILE"); path != "" {
		if prof, err = os.Create(path); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var (
		rep    FeaturesReport
		cpu    time.Duration
		replay = math.Inf(1)
	)
	for k := range b.N {
		b.StopTimer()
		st, sa := scan(cols), scan(allCols)
		scanTime, scanAllTime = min(scanTime, st), min(scanAllTime, sa)
		b.StartTimer()
		if prof != nil {
			if err := pprof.StartCPUProfile(prof); err != nil {
				b.Fatal(err)
			}
		}
		cpu0 := cpuTime()
		rep, err = Features(ctx, cfg, r, store, FeaturesOptions{Now: end})
		if err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - cpu0
		if prof != nil {
			pprof.StopCPUProfile()
			prof.Close()
			prof = nil
		}
		if rep.Events != int64(events) || rep.Entities != users {
			b.Fatalf("replayed %d events of %d entities, want %d of %d", rep.Events, rep.Entities, events, users)
		}
		replay = min(replay, rep.Elapsed.Seconds())
		b.Logf("round %d: scan %s, whole-event scan %s, replay %s", k+1, st.Round(time.Millisecond), sa.Round(time.Millisecond), rep.Elapsed.Round(time.Millisecond))
	}
	b.StopTimer()
	b.ReportMetric(float64(events)/replay, "events/s")
	b.ReportMetric(scanTime.Seconds(), "scan_s")
	b.ReportMetric(scanAllTime.Seconds(), "scan_all_s")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "replay_cpu_s")
	b.ReportMetric(sortTime.Seconds(), "sorted_scan_s")
	b.ReportMetric(readTime.Seconds(), "read_s")
	b.ReportMetric(replay, "replay_s")
	b.ReportMetric(replay/scanTime.Seconds(), "x_scan")
	b.ReportMetric(replay/scanAllTime.Seconds(), "x_scan_all")
}

// holds says whether db's events table holds the benchmark's n events
// already (PULSE_BENCH_DB).
func holds(ctx context.Context, b *testing.B, conn driver.Conn, db string, n int) bool {
	var count uint64
	if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.events", db)).Scan(&count); err != nil {
		b.Fatal(err)
	}
	return count == uint64(n)
}

// cpuTime is the CPU time (user and system) this process has used: on a
// shared machine, steadier than the wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// load10M is an INSERT ... SELECT that generates the events inside
// ClickHouse (fast, nothing crosses the wire): n track events of users
// users, times spread over the 60 days before end, a quarter of them
// orders, with revenue and product_id properties and a typical context.
func load10M(db string, n, users int, end time.Time) string {
	endMs, spanMs := end.UnixMilli(), int64(60*24*time.Hour/time.Millisecond)
	cols := []string{
		"concat('bench-', toString(number))", // message_id
		"'track'",                            // type
		"['Order Completed', 'Product Viewed', 'Product Viewed', 'Session Started'][intHash32(number) % 4 + 1]", // event
		"''", // name
		"concat('user-', toString(number % %USERS))", // user_id
		"''", // anonymous_id
		"concat('user-', toString(number % %USERS))", // entity_id
		"''", "''", // previous_id, group_id
		"toDateTime(intDiv(ts, 1000))", "ts", // timestamp, timestamp_ms
		"toDateTime(intDiv(ts, 1000) + 1)", "ts + 1000", // received_at, received_at_ms
		"ts + 500", "ts", // sent_at_ms, original_timestamp_ms
		`concat('{"revenue":', toString(intHash32(number + 1) % 10000 / 100), ',"product_id":"p', toString(intHash32(number + 2) % 200), '","currency":"USD"}')`, // properties
		"'{}'", // traits
		`concat('{"ip":"10.0.', toString(number % 250), '.1","library":{"name":"analytics.js","version":"4.1.0"},"page":{"path":"/products/', toString(number % 500), '"}}')`, // context
		"'{}'", "''", // integrations, feature_set
		"toNullable(intHash32(number + 1) % 10000 / 100)", "CAST(NULL AS Nullable(Float64))", // revenue, total
		"''", "concat('p', toString(intHash32(number + 2) % 200))", // order_id, product_id
		"toInt32(0)", "toInt64(number)", // kafka_partition, kafka_offset
	}
	sel := strings.ReplaceAll(strings.Join(cols, ", "), "%USERS", strconv.Itoa(users))
	return fmt.Sprintf(`INSERT INTO %s.events (message_id, type, event, name, user_id, anonymous_id, entity_id, previous_id, group_id,
		timestamp, timestamp_ms, received_at, received_at_ms, sent_at_ms, original_timestamp_ms,
		properties, traits, context, integrations, feature_set, revenue, total, order_id, product_id, kafka_partition, kafka_offset)
		SELECT %s FROM (SELECT number, %d - toInt64(intHash64(number) %% %d) AS ts FROM system.numbers LIMIT %d)`,
		db, sel, endMs, spanMs, n)
}

// httpQuery runs sql on ClickHouse's HTTP interface and drops the answer.
func httpQuery(addr, sql string) error {
	resp, err := http.Post("http://"+addr+"/", "text/plain", strings.NewReader(sql))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("clickhouse: %s: %s", resp.Status, body)
	}
	return nil
}
