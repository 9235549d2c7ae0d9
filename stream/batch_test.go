package stream

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The stream's dead letter is event.DeadLetter with every field the
// stream's own record carried before: why (reason, error, field), who
// (source), when, the messageId, the input position and the input itself.
func TestDeadLetterCarriesReasonAndPosition(t *testing.T) {
	cfg, err := config.Parse([]byte("stream:\n  allowed_lateness: 1d\n"), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tk := p.newTask(3)
	f := func(value, reason, msgID string, cause error, want string) {
		t.Helper()
		in := &kgo.Record{Topic: "pulse.events", Partition: 3, Offset: 7, Key: []byte("a"), Value: []byte(value)}
		r := tk.deadLetter(in, reason, msgID, cause, t0)
		if r.Topic != cfg.Kafka.Topics.Invalid || string(r.Key) != "a" {
			t.Errorf("record %s/%s, want %s/a", r.Topic, r.Key, cfg.Kafka.Topics.Invalid)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(r.Value, &fields); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range []string{"error", "field", "reason", "source", "receivedAt", "messageId", "topic", "partition", "offset", "event"} {
			if v, ok := fields[k]; ok {
				got = append(got, fmt.Sprintf("%s=%s", k, v))
			}
		}
		sort.Strings(got)
		if s := strings.Join(got, " "); s != want {
			t.Errorf("dead letter %s\n got %s\nwant %s", r.Value, s, want)
		}
	}
	f(`{"type":"nope"}`, event.ReasonInvalid, "", &event.FieldError{Field: "type", Reason: "unknown"},
		`error="type: unknown" event={"type":"nope"} field="type" offset=7 partition=3 reason="invalid" receivedAt="2025-06-01T12:00:00Z" source="stream" topic="pulse.events"`)
	f(`not json`, event.ReasonLate, "m1", fmt.Errorf("event too late"),
		`error="event too late" event="not json" messageId="m1" offset=7 partition=3 reason="late" receivedAt="2025-06-01T12:00:00Z" source="stream" topic="pulse.events"`)
}

// backlogRecords is n order events of the given entity and message ids,
// at input offsets from..from+n-1.
func backlogRecords(t *testing.T, st *tester, from, n int, user, msgID func(i int) string) []*kgo.Record {
	t.Helper()
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		ev := event.Event{Type: event.Track, Event: "Order Completed", UserID: user(i), MessageID: msgID(i), Timestamp: t0}
		v, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: st.p.cfg.Kafka.Topics.Events, Offset: int64(from + i), Key: []byte(user(i)), Value: v})
	}
	return recs
}

// checkRecordSizes fails on a committed record over Kafka's 1 MB and
// returns the seen ids' changelog records of each transaction.
func checkRecordSizes(t *testing.T, st *tester) (seen [][]*kgo.Record) {
	t.Helper()
	for i, txn := range st.out.committed {
		var s []*kgo.Record
		for _, r := range txn {
			if len(r.Key)+len(r.Value) > 1_000_000 {
				t.Errorf("transaction %d: record %s of %d bytes, over Kafka's 1 MB", i, r.Key, len(r.Value))
			}
			if strings.HasPrefix(string(r.Key), clSeenPrefix) {
				s = append(s, r)
			}
		}
		seen = append(seen, s)
	}
	return seen
}

// localSeen is the task's seen ids and seen batches in Pebble, key to
// value.
func localSeen(t *testing.T, tk *task) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, pre := range [][]byte{pkSeen, pkBatch} {
		it, err := tk.db.NewIter(&pebble.IterOptions{LowerBound: pre, UpperBound: prefixEnd(pre)})
		if err != nil {
			t.Fatal(err)
		}
		for it.First(); it.Valid(); it.Next() {
			out[string(it.Key())] = string(it.Value())
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// A fetched backlog (an import, a stream restarted far behind) commits in
// one transaction however many records it holds; its seen ids go to the
// changelog in several records, each under Kafka's 1 MB, and a restore
// from the changelog alone rebuilds exactly the same seen ids, so every
// one of them is still a duplicate afterwards.
func TestBacklogSeenIDsSplitIntoRecords(t *testing.T) {
	st := &tester{t: t}
	defer st.close()
	if err := st.start("features:\n  - {name: orders, agg: count, event: Order Completed}\n"); err != nil {
		t.Fatal(err)
	}
	const n = 20_000 // 2 MB of messageIds
	msgID := func(i int) string { return fmt.Sprintf("%0*d", event.MaxMessageIDLen, i%n) }
	user := func(i int) string { return fmt.Sprintf("u%d", i%50) }
	// Ten duplicates of the backlog's first ids at its end.
	recs := backlogRecords(t, st, 0, n+10, user, msgID)
	before := eventCounters()
	if err := st.task.processBatch(context.Background(), recs, int64(len(recs))); err != nil {
		t.Fatal(err)
	}
	if d := eventCounters()["duplicate"] - before["duplicate"]; d != 10 {
		t.Errorf("%v duplicates, want 10", d)
	}
	seen := checkRecordSizes(t, st)
	if len(seen) != 1 {
		t.Fatalf("%d transactions, want 1", len(seen))
	}
	if len(seen[0]) < 4 {
		t.Fatalf("%d seen ids records, want at least 4 for 2 MB of ids", len(seen[0]))
	}
	ids := map[string]bool{}
	for _, r := range seen[0] {
		sb, err := decodeSeenBatch(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range sb.ids {
			if ids[id] {
				t.Errorf("%s in two seen records", id)
			}
			ids[id] = true
		}
	}
	if len(ids) != n {
		t.Errorf("%d ids in the seen records, want %d", len(ids), n)
	}
	var sum float64
	for u := range 50 {
		v, err := st.store.Get(context.Background(), entity, user(u))
		if err != nil {
			t.Fatal(err)
		}
		sum += v.Features["orders"].(float64)
	}
	if sum != n {
		t.Fatalf("%v orders, want %d (the duplicates dropped)", sum, n)
	}

	// The local state lost: restore it from the changelog alone.
	want := localSeen(t, st.task)
	if err := st.task.clearLocal(); err != nil {
		t.Fatal(err)
	}
	if err := st.task.db.Set(pkMeta, st.task.meta.encode(), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := st.reopen(&b); err != nil {
		t.Fatal(err)
	}
	got := localSeen(t, st.task)
	if len(got) != len(want) {
		t.Errorf("restored %d seen keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("seen key %q not restored as it was", k)
			break
		}
	}
	st.out.committed = nil
	before = eventCounters()
	again := backlogRecords(t, st, len(recs), n, user, msgID)
	if err := st.task.processBatch(context.Background(), again, int64(len(recs)+n)); err != nil {
		t.Fatal(err)
	}
	if d := eventCounters()["duplicate"] - before["duplicate"]; d != n {
		t.Errorf("after the restore %v of %d sent again were duplicates", d, n)
	}

	// Past the allowed lateness every part is purged, in Pebble and by a
	// tombstone in the changelog, so a restore brings none back.
	st.clock.set(t0.Add(8 * 24 * time.Hour))
	if _, err := st.task.fire(context.Background()); err != nil {
		t.Fatal(err)
	}
	tombstones := 0
	for _, txn := range st.out.committed {
		for _, r := range txn {
			if strings.HasPrefix(string(r.Key), clSeenPrefix) && r.Value == nil {
				tombstones++
			}
		}
	}
	if tombstones != len(seen[0]) {
		t.Errorf("%d seen records purged, want %d", tombstones, len(seen[0]))
	}
	if got := localSeen(t, st.task); len(got) != 0 {
		t.Errorf("%d seen keys left after the purge", len(got))
	}
	if err := st.task.clearLocal(); err != nil {
		t.Fatal(err)
	}
	if err := st.task.db.Set(pkMeta, st.task.meta.encode(), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := st.reopen(&b); err != nil {
		t.Fatal(err)
	}
	if got := localSeen(t, st.task); len(got) != 0 {
		t.Errorf("a restore after the purge brought back %d seen keys", len(got))
	}
}

// A backlog of very many long entity ids commits in more than one
// transaction, so the changelog record that lists a transaction's
// entities stays under Kafka's 1 MB; a duplicate in a later transaction
// of an id an earlier one saw is still dropped.
func TestBacklogOfLongIDsSplitIntoTransactions(t *testing.T) {
	st := &tester{t: t}
	defer st.close()
	if err := st.start("features:\n  - {name: orders, agg: count, event: Order Completed}\n"); err != nil {
		t.Fatal(err)
	}
	const n = 5000 // 1.3 MB of entity ids
	user := func(i int) string { return fmt.Sprintf("%0*d", event.MaxIDLen, i%n) }
	msgID := func(i int) string { return fmt.Sprintf("m%d", i%n) }
	recs := backlogRecords(t, st, 0, n+10, user, msgID)
	before := eventCounters()
	if err := st.task.processBatch(context.Background(), recs, int64(len(recs))); err != nil {
		t.Fatal(err)
	}
	if d := eventCounters()["duplicate"] - before["duplicate"]; d != 10 {
		t.Errorf("%v duplicates, want 10", d)
	}
	if seen := checkRecordSizes(t, st); len(seen) < 2 {
		t.Fatalf("%d transactions, want at least 2", len(seen))
	}
	if st.task.meta.next != int64(len(recs)) {
		t.Errorf("next offset %d, want %d", st.task.meta.next, len(recs))
	}
	for i := range n {
		v, err := st.store.Get(context.Background(), entity, user(i))
		if err != nil || v.Features["orders"] != float64(1) {
			t.Fatalf("entity %d (err %v): %v, want orders 1", i, err, v.Features)
		}
	}
}

// On a real broker, which refuses a record over 1 MB, a backlog whose
// seen ids come to 3 MB is taken in one fetch, committed with its seen
// ids in several records, and restored from the changelog into an empty
// data directory: the backlog's ids sent again are all duplicates.
func TestBacklogRealKafka(t *testing.T) {
	e := newEnv(t, testenv.Kafka(t))
	const n = 30_000
	msgID := func(i int) string { return fmt.Sprintf("%0*d", event.MaxMessageIDLen, i) }
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		recs = append(recs, eventRecord(t, order("a", msgID(i), t0, 1)))
	}
	e.produce(recs...)
	want := func(n float64) {
		t.Helper()
		v, err := e.store.Get(context.Background(), entity, "a")
		if err != nil {
			t.Fatal(err)
		}
		if got := v.Features["orders_lifetime"]; got != n {
			t.Fatalf("orders_lifetime = %v, want %v", got, n)
		}
	}
	run := func(dir string) {
		t.Helper()
		p := e.processor(Options{}, dir)
		stop := e.run(p)
		e.waitCaughtUp(60*time.Second, p)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
	run(filepath.Join(t.TempDir(), "a"))
	want(n)
	parts := 0
	for _, r := range readTopic(t, e, e.cfg.Kafka.Topics.State) {
		if k := string(r.Key); strings.HasPrefix(k, clSeenPrefix) && strings.Contains(k, ".") {
			parts++
		}
	}
	if parts == 0 {
		t.Errorf("no seen ids record past a batch's first: the backlog was not one transaction")
	}
	// A fresh data directory restores from the changelog.
	again := make([]*kgo.Record, 0, n+1)
	for i := range n {
		again = append(again, eventRecord(t, order("a", msgID(i), t0, 1)))
	}
	again = append(again, eventRecord(t, order("a", "new", t0, 1)))
	e.produce(again...)
	run(filepath.Join(t.TempDir(), "b"))
	want(n + 1)
}

// Resolved records are bounded the same way: a poll of identity moves
// whose entity ids come to 1.3 MB commits in more than one transaction,
// each record under Kafka's 1 MB, and every move is applied once.
func TestResolvedOfLongIDsSplitIntoTransactions(t *testing.T) {
	st := &tester{t: t}
	defer st.close()
	if err := st.start("features:\n  - {name: orders, agg: count, event: Order Completed}\n"); err != nil {
		t.Fatal(err)
	}
	const n = 5000
	user := func(i int) string { return fmt.Sprintf("%0*d", event.MaxIDLen, i) }
	recs := backlogRecords(t, st, 0, n, user, func(i int) string { return fmt.Sprintf("m%d", i) })
	if err := st.task.processBatch(context.Background(), recs, int64(len(recs))); err != nil {
		t.Fatal(err)
	}
	before := len(st.out.committed)
	moves := make([]*kgo.Record, 0, n)
	for i := range n {
		rr := resolved{Kind: resolvedMove, From: user(i), To: "person", At: t0, Cause: fmt.Sprintf("link-%d", i)}
		moves = append(moves, &kgo.Record{Topic: st.p.cfg.Kafka.Topics.Resolved, Offset: int64(i), Key: []byte(rr.From), Value: encodeResolved(rr)})
	}
	st.task.addResolved(moves)
	if err := st.task.applyResolved(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkRecordSizes(t, st)
	if txns := len(st.out.committed) - before; txns < 2 {
		t.Fatalf("%d transactions for the moves, want at least 2", txns)
	}
	if st.task.meta.resolvedNext != n {
		t.Errorf("next resolved offset %d, want %d", st.task.meta.resolvedNext, n)
	}
	x := st.task.newTxn()
	defer x.abort()
	for _, i := range []int{0, n / 2, n - 1} {
		if to, err := st.task.target(x, user(i)); err != nil || to != "person" {
			t.Errorf("entity %d points to %q (%v), want person", i, to, err)
		}
	}
}

// A task's worker folds the batches queued behind the one it takes into
// it (task.fold), in order, up to MaxPollRecords.
func TestWorkerFoldsQueuedBatches(t *testing.T) {
	recs := func(from, n int64) []*kgo.Record {
		out := make([]*kgo.Record, n)
		for i := range out {
			out[i] = &kgo.Record{Offset: from + int64(i)}
		}
		return out
	}
	tk := &task{p: &Processor{opts: Options{MaxPollRecords: 25}}, queue: make(chan taskWork, queueDepth)}
	tk.queue <- taskWork{recs(10, 10), 40}
	tk.queue <- taskWork{recs(20, 10), 50}
	w := tk.fold(taskWork{recs(0, 10), 30})
	if len(w.recs) != 30 || w.hwm != 50 {
		t.Fatalf("folded %d records, hwm %d; want 30 and 50", len(w.recs), w.hwm)
	}
	for i, r := range w.recs {
		if r.Offset != int64(i) {
			t.Fatalf("record %d has offset %d", i, r.Offset)
		}
	}
	// Past MaxPollRecords it stops: the rest waits for the next batch.
	tk.queue <- taskWork{recs(30, 10), 60}
	tk.queue <- taskWork{recs(40, 10), 70}
	w = tk.fold(taskWork{recs(25, 5), 55})
	// 5 < 25: takes 30..39 (15 < 25), then 40..49 (25): at the bound.
	if len(w.recs) != 25 || w.hwm != 70 || len(tk.queue) != 0 {
		t.Fatalf("folded %d records, hwm %d; want 25 and 70", len(w.recs), w.hwm)
	}
	tk.queue <- taskWork{recs(50, 10), 80}
	tk.queue <- taskWork{recs(60, 10), 90}
	w = tk.fold(taskWork{recs(45, 25), 75})
	if len(w.recs) != 25 || len(tk.queue) != 2 {
		t.Fatalf("a full batch took %d records and left %d queued; want 25 and 2", len(w.recs), len(tk.queue))
	}
}

// Resolved records pending when a batch of events takes the work lock
// ride in its transaction, before its events: one commit applies a
// merge's move and forwards the moved entity's event of the same batch;
// the next batch carries the transfer and the forwarded event to the
// target. More than rideResolvedLimit pending are left to the resolved
// loop's own transactions.
func TestBatchCarriesResolved(t *testing.T) {
	st := &tester{t: t}
	defer st.close()
	if err := st.start("features:\n  - {name: orders, agg: count, event: Order Completed}\n"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tp := st.p.cfg.Kafka.Topics
	batch := func(recs ...*kgo.Record) []*kgo.Record {
		t.Helper()
		before := len(st.out.committed)
		if err := st.task.processBatch(ctx, recs, recs[len(recs)-1].Offset+1); err != nil {
			t.Fatal(err)
		}
		if n := len(st.out.committed) - before; n != 1 {
			t.Fatalf("%d transactions for a batch, want 1", n)
		}
		return st.out.committed[len(st.out.committed)-1]
	}
	resolvedOut := func(txn []*kgo.Record) (keys []string) {
		for _, r := range txn {
			if r.Topic == tp.Resolved {
				rr, err := decodeResolved(r.Value)
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, rr.Kind+":"+string(r.Key))
			}
		}
		return keys
	}
	orders := func(id string) any {
		v, err := st.store.Get(ctx, entity, id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		return v.Features["orders"]
	}
	batch(st.orderRecord("anon", "m1", 0, t0, 1), st.orderRecord("person", "m2", 1, t0, 1))

	// The linker's move, fetched by the resolved loop while a batch
	// worked: the next batch carries it, and the moved entity's order in
	// that batch goes to its target.
	move := resolved{Kind: resolvedMove, From: "anon", To: "person", At: t0, Cause: "identify-1"}
	st.task.addResolved([]*kgo.Record{{Topic: tp.Resolved, Offset: 0, Key: []byte("anon"), Value: encodeResolved(move)}})
	txn := batch(st.orderRecord("anon", "m3", 2, t0, 1))
	if got, want := resolvedOut(txn), []string{resolvedTransfer + ":person", resolvedEvent + ":person"}; !slices.Equal(got, want) {
		t.Fatalf("the batch carrying the move sent %v on the resolved topic, want %v (the state, then the event)", got, want)
	}
	if st.task.meta.resolvedNext != 1 || len(st.task.resolvedPend) != 0 {
		t.Fatalf("after the batch: resolved next %d, %d pending; want 1, 0", st.task.meta.resolvedNext, len(st.task.resolvedPend))
	}
	x := st.task.newTxn()
	if to, err := st.task.target(x, "anon"); err != nil || to != "person" {
		t.Fatalf("anon points to %q (%v), want person", to, err)
	}
	x.abort()

	// What that transaction sent, fetched back after the move (the
	// in-memory log numbers the resolved topic apart from it): the next
	// batch merges it.
	var back []*kgo.Record
	for _, r := range txn {
		if r.Topic == tp.Resolved {
			c := *r
			c.Offset = st.task.meta.resolvedNext + int64(len(back))
			back = append(back, &c)
		}
	}
	st.task.addResolved(back)
	batch(st.orderRecord("other", "m4", 3, t0, 1))
	if got := orders("person"); got != 3.0 {
		t.Errorf("person's orders %v after the merge, want 3 (its own, anon's before and after the link)", got)
	}
	if err := st.task.applyResolved(ctx); err != nil {
		t.Fatal(err)
	}

	// A backlog is the resolved loop's: the batch leaves it, the loop
	// applies it in its own transaction.
	var many []*kgo.Record
	next := st.task.meta.resolvedNext
	for i := range rideResolvedLimit + 1 {
		rr := resolved{Kind: resolvedMove, From: fmt.Sprintf("a%d", i), To: "person", At: t0, Cause: "identify"}
		many = append(many, &kgo.Record{Topic: tp.Resolved, Offset: next + int64(i), Key: []byte(rr.From), Value: encodeResolved(rr)})
	}
	st.task.addResolved(many)
	batch(st.orderRecord("other", "m5", 4, t0, 1))
	if st.task.meta.resolvedNext != next || len(st.task.resolvedPend) != len(many) {
		t.Fatalf("a batch took a backlog of %d resolved records (next %d, %d pending)", len(many), st.task.meta.resolvedNext, len(st.task.resolvedPend))
	}
	before := len(st.out.committed)
	if err := st.task.applyResolved(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(st.out.committed) - before; n != 1 || st.task.meta.resolvedNext != next+int64(len(many)) {
		t.Fatalf("the loop applied the backlog in %d transactions to offset %d, want 1 to %d", n, st.task.meta.resolvedNext, next+int64(len(many)))
	}
}
