package history

import (
	"context"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/model"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTraitScoresLand: the stream's trait score records reach the
// trait_scores table through the writer, a replayed change collapsing on
// its change_id and a null score kept null.
func TestTraitScoresLand(t *testing.T) {
	native, _ := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	cfg := testConfig(t, native, db)
	at := time.Date(2026, 3, 1, 10, 0, 0, 250e6, time.UTC)
	rec := func(id string, score *float64, at time.Time) *kgo.Record {
		s := 0.0
		if score != nil {
			s = *score
		}
		ts := model.TraitScore{ChangeID: model.TraitChangeID("churn_risk", "user", id, at, s), Trait: "churn_risk", Model: "churn",
			Version: "0123456789ab", Entity: "user", ID: id, Score: score, At: at}
		b, err := ts.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return &kgo.Record{Topic: cfg.Kafka.Topics.Traits, Key: []byte(id), Value: b}
	}
	a, b := 0.81, 0.4
	first := rec("u1", &a, at)
	produce(t, cfg, first, rec("u1", &b, at.Add(time.Hour)), rec("u2", nil, at),
		&kgo.Record{Topic: first.Topic, Key: first.Key, Value: first.Value}) // a replay
	startWriter(t, cfg, WriterOptions{FlushInterval: 100 * time.Millisecond})
	conn := openTest(t, native)
	waitCount(t, conn, "SELECT count() FROM "+db+".trait_scores", 4, 20*time.Second)
	waitCount(t, conn, "SELECT count() FROM "+db+".trait_scores FINAL", 3, 20*time.Second)
	var (
		trait, mdl, version, entity string
		score                       *float64
		atMs                        int64
	)
	ctx := context.Background()
	if err := conn.QueryRow(ctx, "SELECT trait, model, version, entity, score, at_ms FROM "+db+".trait_scores FINAL WHERE entity_id = 'u1' ORDER BY at_ms LIMIT 1").
		Scan(&trait, &mdl, &version, &entity, &score, &atMs); err != nil {
		t.Fatal(err)
	}
	if trait != "churn_risk" || mdl != "churn" || version != "0123456789ab" || entity != "user" || score == nil || *score != a || atMs != at.UnixMilli() {
		t.Fatalf("row: %s %s %s %s %v %d", trait, mdl, version, entity, score, atMs)
	}
	if err := conn.QueryRow(ctx, "SELECT score FROM "+db+".trait_scores WHERE entity_id = 'u2'").Scan(&score); err != nil || score != nil {
		t.Fatalf("u2's score: %v %v, want null", score, err)
	}
}
