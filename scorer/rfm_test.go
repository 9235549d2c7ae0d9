package scorer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/rfm"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRFMGrid: GET /v1/rfm sums the partitions' last grids, whatever
// boundaries each was counted under (a partition gone quiet is left out),
// with each cell's group and average monetary value, for a read key only.
func TestRFMGrid(t *testing.T) {
	cfg, err := config.Load("../examples/ecommerce/pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kafka.Partitions = 1
	emb, err := kafka.StartEmbedded(kafka.EmbeddedOptions{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	cfg.Kafka.Brokers = emb.Addrs()
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(context.Background(), cl, cfg.Kafka); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	b := &rfm.Boundaries{Version: 2, Scores: 5, R: []float64{1, 2, 3, 4}, F: []float64{1, 2, 3, 4}, M: []float64{1, 2, 3, 4}, Buyers: 5}
	sums := []*rfm.Summary{
		{Partition: 0, Version: 2, At: at, Prospects: 3, Grid: []rfm.Cell{{R: 5, F: 5, N: 2, Monetary: 300}, {R: 1, F: 1, N: 1, Monetary: 10}}},
		{Partition: 1, Version: 2, At: at.Add(time.Second), Prospects: 1, Grid: []rfm.Cell{{R: 5, F: 5, N: 1, Monetary: 30}}},
		{Partition: 2, Version: 1, At: at.Add(-time.Hour), Grid: []rfm.Cell{{R: 5, F: 5, N: 100, Monetary: 1}}}, // gone quiet
	}
	recs := []*kgo.Record{{Topic: cfg.Kafka.Topics.RFM, Key: []byte("boundaries"), Value: b.Encode()}}
	for _, s := range sums {
		recs = append(recs, &kgo.Record{Topic: cfg.Kafka.Topics.RFM, Key: []byte("summary/x"), Value: s.Encode()})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	view := scorer.NewRFMView(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- view.Run(ctx) }()
	defer func() { cancel(); <-done }()
	h := start(t, cfg, newMemStore(), scorer.WithRFM(view))

	var got scorer.RFMAnswer
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		code, body := h.do("GET", "/v1/rfm", "dev-read-key", "")
		if code != 200 {
			t.Fatalf("GET /v1/rfm: %d %s", code, body)
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
		if got.Partitions == 2 {
			break
		}
	}
	if !got.Enabled || got.Version != 2 || got.Partitions != 2 || got.Prospects != 4 || len(got.Grid) != 25 || !got.At.Equal(at) {
		t.Fatalf("answer %+v", got)
	}
	first, last := got.Grid[0], got.Grid[24]
	if first.R != 5 || first.F != 1 || first.Group != "new" || last.R != 1 || last.F != 5 || last.Group != "cannot_lose" {
		t.Fatalf("grid order: first %+v, last %+v", first, last)
	}
	for _, c := range got.Grid {
		switch {
		case c.R == 5 && c.F == 5:
			if c.Count != 3 || c.AvgMonetary != 110 || c.Group != "champions" {
				t.Errorf("cell 5,5: %+v", c)
			}
		case c.R == 1 && c.F == 1:
			if c.Count != 1 || c.AvgMonetary != 10 || c.Group != "lost" {
				t.Errorf("cell 1,1: %+v", c)
			}
		case c.Count != 0:
			t.Errorf("cell %d,%d: %+v, want empty", c.R, c.F, c)
		}
	}
	if got.GridVersion != 2 {
		t.Errorf("grid_version %d, want 2", got.GridVersion)
	}
	// New boundaries, made from those summaries, and one partition that
	// has counted under them: the grid sums every partition's last count
	// (it used to keep only the summaries of the boundaries in force,
	// which in a moving population are almost never all there, and went
	// empty at every refresh).
	b3 := *b
	b3.Version = 3
	s3 := &rfm.Summary{Partition: 3, Version: 3, At: at.Add(2 * time.Second), Grid: []rfm.Cell{{R: 5, F: 5, N: 1, Monetary: 50}}}
	if err := cl.ProduceSync(context.Background(),
		&kgo.Record{Topic: cfg.Kafka.Topics.RFM, Key: []byte("boundaries"), Value: b3.Encode()},
		&kgo.Record{Topic: cfg.Kafka.Topics.RFM, Key: []byte("summary/3"), Value: s3.Encode()}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && got.Partitions != 3; time.Sleep(50 * time.Millisecond) {
		_, body := h.do("GET", "/v1/rfm", "dev-read-key", "")
		got = scorer.RFMAnswer{}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
	}
	if got.Version != 3 || got.GridVersion != 2 || got.Partitions != 3 {
		t.Fatalf("after boundaries v3: version %d, grid_version %d, partitions %d; want 3, 2, 3", got.Version, got.GridVersion, got.Partitions)
	}
	for _, c := range got.Grid {
		if c.R == 5 && c.F == 5 && (c.Count != 4 || c.AvgMonetary != 95) {
			t.Errorf("after boundaries v3, cell 5,5: %+v, want 4 buyers averaging 95", c)
		}
	}
	// Moves: an exit and an enter of one user at one time, in either
	// order, are one move; an enter alone (a first group) is none, and
	// so is entering and leaving one group at one time (f: an anonymous
	// id's first event and its merge, stamped alike; it was counted as
	// prospects → prospects). f's real move comes after it on the same
	// key, so once it shows the pair before it has been read.
	seg := func(id, s, change string, at time.Time) *kgo.Record {
		return &kgo.Record{Topic: cfg.Kafka.Topics.Segments, Key: []byte(id), Value: []byte(fmt.Sprintf(
			`{"change_id":"%s-%s-%s","segment":%q,"entity":"user","id":%q,"change":%q,"at":%q}`, id, s, change, s, id, change, at.Format(time.RFC3339Nano)))}
	}
	t1 := time.Now().UTC()
	if err := cl.ProduceSync(context.Background(),
		seg("a", "rfm:loyal", "exit", t1), seg("a", "rfm:at_risk", "enter", t1),
		seg("b", "rfm:at_risk", "enter", t1), seg("b", "rfm:loyal", "exit", t1),
		seg("c", "rfm:lost", "exit", t1), seg("c", "rfm:new", "enter", t1),
		seg("d", "rfm:new", "enter", t1), seg("e", "big_spenders", "enter", t1),
		seg("f", "rfm:prospects", "enter", t1), seg("f", "rfm:prospects", "exit", t1),
		seg("f", "rfm:hibernating", "exit", t1.Add(time.Second)), seg("f", "rfm:lost", "enter", t1.Add(time.Second)),
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && len(got.Moves) < 3; time.Sleep(50 * time.Millisecond) {
		_, body := h.do("GET", "/v1/rfm", "dev-read-key", "")
		got = scorer.RFMAnswer{}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
	}
	want := []scorer.RFMMoveCount{{From: "loyal", To: "at_risk", Count: 2}, {From: "hibernating", To: "lost", Count: 1}, {From: "lost", To: "new", Count: 1}}
	if fmt.Sprint(got.Moves) != fmt.Sprint(want) {
		t.Fatalf("moves %v, want %v", got.Moves, want)
	}
	if code, _ := h.do("GET", "/v1/rfm", "", ""); code != 401 {
		t.Fatalf("without a key: %d, want 401", code)
	}
}

// TestRFMCellMembers: GET /v1/rfm/cells/{r}/{f}/members lists the members
// of the cell's group (on a real Pebble store) whose rfm_r and rfm_f are the
// cell's, page by page with a cursor that resumes exactly, each member
// once; bad scores and cursors are 400s naming the field.
func TestRFMCellMembers(t *testing.T) {
	cfg, err := config.Load("../examples/ecommerce/pulse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	st, err := featurestore.OpenPebble(filepath.Join(t.TempDir(), "store"), featurestore.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// champions is R 5, F 4-5: members in cell (5,5) and (5,4), a
	// loyal member elsewhere.
	var ups []featurestore.Update
	want55 := []string{}
	for i := range 120 {
		id := fmt.Sprintf("u%03d", i)
		f := 4.0
		if i%3 == 0 {
			f = 5
			want55 = append(want55, id)
		}
		ups = append(ups, featurestore.Update{Vector: featurestore.Vector{Entity: "user", ID: id,
			Features: map[string]any{"rfm_r": 5.0, "rfm_f": f, "rfm_group": "champions"}, UpdatedAt: time.Now()}, Enter: []string{"rfm:champions"}})
	}
	ups = append(ups, featurestore.Update{Vector: featurestore.Vector{Entity: "user", ID: "x",
		Features: map[string]any{"rfm_r": 3.0, "rfm_f": 5.0, "rfm_group": "loyal"}, UpdatedAt: time.Now()}, Enter: []string{"rfm:loyal"}})
	if err := st.Write(context.Background(), ups); err != nil {
		t.Fatal(err)
	}
	h := start(t, cfg, st)
	var got []string
	cursor, pages := "", 0
	for {
		code, body := h.do("GET", "/v1/rfm/cells/5/5/members?limit=7&cursor="+cursor, "dev-read-key", "")
		var p scorer.RFMCellMembers
		if code != 200 || json.Unmarshal([]byte(body), &p) != nil {
			t.Fatalf("page %d: %d %s", pages, code, body)
		}
		if len(p.Members) > 7 || p.Scanned > 140 || fmt.Sprint(p.Groups) != "[rfm:champions]" {
			t.Fatalf("page %d: %s", pages, body)
		}
		got = append(got, p.Members...)
		pages++
		if cursor = p.NextCursor; cursor == "" || pages > 50 {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want55) {
		t.Fatalf("cell 5,5 members %v, want %v", got, want55)
	}
	code, body := h.do("GET", "/v1/rfm/cells/3/5/members", "dev-read-key", "")
	if code != 200 || !strings.Contains(body, `"members":["x"]`) {
		t.Errorf("cell 3,5: %d %s", code, body)
	}
	for path, want := range map[string]string{
		"/v1/rfm/cells/6/1/members":            `r: want a score from 1 to 5`,
		"/v1/rfm/cells/1/x/members":            `f: want a score from 1 to 5`,
		"/v1/rfm/cells/1/1/members?cursor=9.a": `cursor: not one this endpoint gave`,
		"/v1/rfm/cells/1/1/members?limit=0":    `limit: want a whole number`,
	} {
		if code, body := h.do("GET", path, "dev-read-key", ""); code != 400 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %s, want 400 %q", path, code, body, want)
		}
	}
	if code, _ := h.do("GET", "/v1/rfm/cells/1/1/members", "", ""); code != 401 {
		t.Errorf("without a key: %d, want 401", code)
	}
}
