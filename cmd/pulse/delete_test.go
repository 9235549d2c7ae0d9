package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/deletion"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kgo"
	"gopkg.in/yaml.v3"
)

// `pulse delete` on a real Kafka: a forget request per id, from the
// arguments and a file, of the kind asked for, printed with its request
// id; an unknown kind or no ids are refused with the reason and write
// nothing.
func TestDeleteCommand(t *testing.T) {
	bin := testenv.BuildPulse(t)
	broker := testenv.Kafka(t)[0]
	var tp config.Topics
	tp.Named(testenv.Topic(t, "del")) // every topic the command creates: this test's own
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	yml, err := yaml.Marshal(map[string]any{
		"kafka":      map[string]any{"brokers": []string{broker}, "topics": tp},
		"clickhouse": map[string]any{"addr": native, "database": db},
		"features":   []map[string]string{{"name": "orders_7d", "agg": "count", "event": "Order Completed", "window": "7d"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "pulse.yaml")
	if err := os.WriteFile(conf, yml, 0o644); err != nil {
		t.Fatal(err)
	}
	ids := filepath.Join(dir, "ids.txt")
	if err := os.WriteFile(ids, []byte("u-2\n\n  u-3  \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string) { return runBin(t, bin, dir, args...) }
	if code, out := run("delete", "-config", conf, "-kind", "phone", "u-1"); code != 1 || !strings.Contains(out, `-kind: unknown identifier kind "phone" (want user_id, anonymous_id, email)`) {
		t.Fatalf("unknown kind: %d %s", code, out)
	}
	if code, out := run("delete", "-config", conf); code != 1 || !strings.Contains(out, "no ids") {
		t.Fatalf("no ids: %d %s", code, out)
	}
	code, out := run("delete", "-config", conf, "-file", ids, "u-1")
	if code != 0 || !strings.Contains(out, "user_id:u-1\tdelete-") || !strings.Contains(out, "user_id:u-3\tdelete-") || !strings.Contains(out, "3 deletion requests") {
		t.Fatalf("delete: %d %s", code, out)
	}
	if code, out = run("delete", "-config", conf, "-kind", "email", "-suppress", "jo@example.com"); code != 0 {
		t.Fatalf("delete by email: %d %s", code, out)
	}

	var got []string
	for _, r := range testenv.ConsumeExactly(t, []string{broker}, tp.IdentityRequests, 4) {
		q, err := identity.DecodeRequest(r.Value)
		if err != nil || q.Kind != identity.KindForget || q.From != q.To || string(r.Key) != q.To.Value || !strings.HasPrefix(q.MessageID, "delete-") ||
			q.Suppress != (q.To.Kind == "email") {
			t.Errorf("record %s: %+v %v", r.Value, q, err)
		}
		got = append(got, q.To.String())
	}
	want := "user_id:u-1 user_id:u-2 user_id:u-3 email:jo@example.com"
	if strings.Join(got, " ") != want {
		t.Fatalf("requests %v, want %s", got, want)
	}
	// Each deletion's progress starts with its request, naming no one.
	asked := map[string]bool{}
	for _, r := range testenv.ConsumeExactly(t, []string{broker}, tp.Deletions, 4) {
		rec, err := deletion.Decode(r.Value)
		if err != nil || rec.Stage != deletion.Requested || rec.RequestedAt.IsZero() || strings.Contains(string(r.Value), "u-") {
			t.Errorf("deletion record %s: %+v %v", r.Value, rec, err)
		}
		asked[rec.Request] = true
	}

	// -wait: until every deletion is done (here the test records the
	// linker's, the stream's and the history's shares, as they would, and
	// holds a ClickHouse mutation running, created before the history's
	// share: the wait goes on until it is gone); and, when the time runs
	// out first, a failure that says which are not.
	conn, err := history.Open(config.ClickHouse{Addr: native})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{
		"CREATE TABLE " + db + ".m (a UInt8) ENGINE = MergeTree ORDER BY a",
		"INSERT INTO " + db + ".m (a) SELECT toUInt8(number) FROM system.numbers LIMIT 2",
		"ALTER TABLE " + db + ".m DELETE WHERE throwIf(a = 1)", // fails, and stays
	} {
		if err := conn.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // the shares below are recorded in a later second
	res := make(chan string, 1)
	go func() {
		code, out := run("delete", "-config", conf, "-wait", "60s", "u-7")
		res <- fmt.Sprint(code, " ", out)
	}()
	cl, err := kafka.NewClient(config.Kafka{Brokers: []string{broker}}, kgo.ConsumeTopics(tp.Deletions), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var req string
	for req == "" && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if rec, err := deletion.Decode(r.Value); err == nil && !asked[rec.Request] {
				req = rec.Request
			}
		})
	}
	if req == "" {
		t.Fatalf("no request of -wait's deletion: %s", <-res)
	}
	var shares []*kgo.Record
	for _, rec := range []deletion.Record{
		{Request: req, Stage: deletion.Identity, At: time.Now(), Kind: "user_id", Identifiers: 1, Entities: 1},
		{Request: req, Stage: deletion.Stream, At: time.Now()},
		{Request: req, Stage: deletion.History, At: time.Now()},
	} {
		shares = append(shares, &kgo.Record{Topic: tp.Deletions, Key: rec.Key(), Value: rec.Encode()})
	}
	if err := cl.ProduceSync(ctx, shares...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	select {
	case out := <-res:
		t.Fatalf("delete -wait ended with a mutation running: %s", out)
	case <-time.After(2 * time.Second):
	}
	if err := conn.Exec(ctx, "DROP TABLE "+db+".m"); err != nil { // its mutation goes with it
		t.Fatal(err)
	}
	if out := <-res; !strings.HasPrefix(out, "0 ") || !strings.Contains(out, "user_id:u-7\t"+req+"\tdone") {
		t.Fatalf("delete -wait: %s", out)
	}
	if code, out := run("delete", "-config", conf, "-wait", "1s", "u-8"); code != 1 || !strings.Contains(out, "\tpending") ||
		!strings.Contains(out, "1 of 1 deletions not done within 1s") {
		t.Fatalf("delete -wait with no linker: %d %s", code, out)
	}
}
