package importer_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/importer"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
)

// TestImportFeatureRows imports feature rows (a CSV and JSON lines) into a
// real broker: each row is an identify of its id column's user, its other
// columns the traits typed by content, tagged with the feature set, as
// /v1/stream makes them; a row with no id is reported; a file with no id
// column stops the import naming the columns it has.
func TestImportFeatureRows(t *testing.T) {
	brokers := testenv.Kafka(t)
	events, invalid := testenv.Topic(t, "rows-events"), testenv.Topic(t, "rows-invalid")
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	csvPath := write("profiles.csv", "customer,age,country,vip,score\nc1,31,US,true,0.5\n,40,DE,false,1\nc2,,FR,false,007\n")
	jsonPath := write("profiles.jsonl", `{"customer":612,"age":31,"address":{"city":"Paris"}}`+"\n"+`{"age":5}`+"\n")
	cl, err := kafka.NewClient(config.Kafka{Brokers: brokers, ClientID: "rows-test"}, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), 1, 1, nil, events, invalid); err != nil {
		t.Fatal(err)
	}
	rows := &importer.FeatureRows{FeatureSet: "user/profile_attributes/5", ID: "customer"}
	var report bytes.Buffer
	s, err := importer.Import(context.Background(), cl, []string{csvPath, jsonPath}, importer.Options{Events: events, Invalid: invalid, Rows: rows, Report: &report})
	var refused *importer.RefusedError
	if !errors.As(err, &refused) || s.Rows != 5 || s.Imported != 3 || s.Refused != 2 {
		t.Fatalf("%s (err %v); want 5 rows, 3 imported, 2 refused", s, err)
	}
	for _, want := range []string{
		"profiles.csv,2,customer,,userId or anonymousId is required",
		`profiles.jsonl,2,customer,,"no id column ""customer"" (the columns are age): name it with -id COLUMN"`,
	} {
		if !strings.Contains(report.String(), want) {
			t.Errorf("report:\n%s\nlacks %s", report.String(), want)
		}
	}
	got := map[string]string{}
	for _, r := range consume(t, brokers, events, 3) {
		e, err := event.Unmarshal(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if e.Type != event.Identify || e.FeatureSet != rows.FeatureSet || !strings.HasPrefix(e.MessageID, "import-") || string(r.Key) != e.UserID {
			t.Errorf("%s: %s featureSet %q messageId %q key %q; want an identify of the feature set, a derived id, keyed by the user", e.UserID, e.Type, e.FeatureSet, e.MessageID, r.Key)
		}
		got[e.UserID] = text(e.Traits)
	}
	want := map[string]string{
		"c1":  `{"age":31,"country":"US","score":0.5,"vip":true}`,
		"c2":  `{"country":"FR","score":7,"vip":false}`,
		"612": `{"address":{"city":"Paris"},"age":31}`,
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("user %s: traits %s, want %s", id, got[id], w)
		}
	}

	bad := write("noid.csv", "user,age\nu1,3\n")
	_, err = importer.Import(context.Background(), cl, []string{bad}, importer.Options{Events: events, Invalid: invalid, Rows: rows})
	if err == nil || !strings.Contains(err.Error(), `no id column "customer" (the columns are user, age)`) {
		t.Fatalf("a file with no id column: %v", err)
	}
	if _, err := importer.Import(context.Background(), cl, []string{csvPath}, importer.Options{Rows: &importer.FeatureRows{}}); err == nil || !strings.Contains(err.Error(), "-feature-set") {
		t.Fatalf("no feature set: %v", err)
	}
}
