package stream

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestAutoRecordMovesIntoValue: an entity stored as builds before the
// automatic record moved into the entity's value kept it (a value without
// it, the record under r/<id> and __auto/<id>) is read with that record,
// and its next write puts the record in the value and deletes the old key
// in Pebble and, by a tombstone, in the changelog.
func TestAutoRecordMovesIntoValue(t *testing.T) {
	st := startRFMTester(t)
	ctx := context.Background()
	st.scoredBuyer(t, "u1")
	v, closer, err := st.task.db.Get(key(pkEntity, "u1"))
	if err != nil {
		t.Fatal(err)
	}
	local := bytes.Clone(v)
	closer.Close()
	due, cl, err := splitLocalValue(local)
	if err != nil {
		t.Fatal(err)
	}
	state, memb, auto, err := splitEntityValue(cl)
	if err != nil || auto == nil {
		t.Fatalf("no automatic record in the value (err %v)", err)
	}
	rec, err := decodeAutoRecord(auto)
	if err != nil || rec.group == "" {
		t.Fatalf("record %+v, err %v: the test shows nothing", rec, err)
	}

	// The old layout: the value without the record, the record apart.
	old := localValue(due, entityValue(nil, state, memb))
	if err := st.task.db.Set(key(pkEntity, "u1"), old, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.task.db.Set(key(pkAuto, "u1"), rec.encode(), nil); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := st.reopen(&b); err != nil {
		t.Fatal(err)
	}
	e, err := st.task.load("u1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.task.autoValues(e, st.p.features.Values(e.st, t0, nil), t0); err != nil {
		t.Fatal(err)
	}
	if !e.autoRec.equal(&rec) || !e.legacyAuto {
		t.Fatalf("read %+v (legacy %v), want %+v from r/u1", e.autoRec, e.legacyAuto, rec)
	}

	before := len(st.out.all)
	if err := st.task.processBatch(ctx, []*kgo.Record{st.orderRecord("u1", "m2", 1, t0.Add(-time.Hour), 10)}, 2); err != nil {
		t.Fatal(err)
	}
	if ok, err := st.task.has(key(pkAuto, "u1")); err != nil || ok {
		t.Fatalf("r/u1 still in Pebble (err %v)", err)
	}
	tomb := false
	for _, r := range st.out.all[before:] {
		if string(r.Key) == clAutoPrefix+"u1" {
			tomb = r.Value == nil
		}
	}
	if !tomb {
		t.Error("no tombstone for __auto/u1 in the changelog")
	}
	v, closer, err = st.task.db.Get(key(pkEntity, "u1"))
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	_, cl, _ = splitLocalValue(v)
	if _, _, auto, err := splitEntityValue(cl); err != nil || auto == nil {
		t.Fatalf("the rewritten value holds no record (err %v)", err)
	}
}

// TestTxnRecordsCounted: pulse_stream_txn_records_total counts a committed
// transaction's records by topic, its __offset record included.
func TestTxnRecordsCounted(t *testing.T) {
	st := startRFMTester(t)
	state := st.p.cfg.Kafka.Topics.State
	before := testutil.ToFloat64(mTxnRecords.WithLabelValues(state))
	n := len(st.out.all)
	recs := []*kgo.Record{st.orderRecord("u1", "m1", 0, t0, 10), st.orderRecord("u2", "m2", 1, t0, 20)}
	if err := st.task.processBatch(context.Background(), recs, 2); err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, r := range st.out.all[n:] {
		if r.Topic == state {
			want++
		}
	}
	if want < 3 { // two entities and the offset
		t.Fatalf("%d changelog records: the test shows nothing", want)
	}
	if got := testutil.ToFloat64(mTxnRecords.WithLabelValues(state)) - before; got != float64(want) {
		t.Errorf("counted %v changelog records, the transaction wrote %d", got, want)
	}
}
