package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulse-rt/pulse/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestImportCommand runs `pulse import events` against a real broker: a
// CSV on stdin mapped by -map flags, whose refused rows make exit code 2
// and fill the report; a clean file exits 0; a missing file exits 1.
func TestImportCommand(t *testing.T) {
	bin := testenv.BuildPulse(t)
	brokers := testenv.Kafka(t)
	prefix := testenv.Topic(t, "importcmd")
	dir := t.TempDir()
	conf := fmt.Sprintf(`kafka:
  brokers: [%q]
  topics: {events: %[2]s.events, invalid: %[2]s.invalid, segments: %[2]s.segments, predictions: %[2]s.predictions,
           state: %[2]s.state, seeds: %[2]s.seeds, activations: %[2]s.activations}
`, brokers[0], prefix)
	cfgPath := filepath.Join(dir, "pulse.yaml")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(stdin string, args ...string) (code int, stderr string) {
		t.Helper()
		what := "events"
		if len(args) > 0 && args[0] == "-query" {
			what = "clickhouse"
		}
		cmd := exec.Command(bin, append([]string{"import", what, "-config", cfgPath}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var eb bytes.Buffer
		cmd.Stderr = &eb
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), eb.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, eb.String()
	}

	orders := "id,customer,total,at\n1,c1,10,1764496800\n2,,5,1764496800\n3,c2,x1,1764496800\n4,c3,7,yesterday\n"
	report := filepath.Join(dir, "report.csv")
	code, stderr := run(orders, "-map", "userId=customer", "-map", `event="Order Completed"`, "-map", "properties.total=total",
		"-map", "timestamp=at", "-map", "timestampFormat=unix", "-report", report, "-")
	if code != 2 || !strings.Contains(stderr, "4 rows from 1 file(s): 2 imported, 2 refused") {
		t.Fatalf("exit code %d, stderr:\n%s\nwant 2 and the summary of 2 imported, 2 refused", code, stderr)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	wantReport := "file,row,column,value,reason\n" +
		"stdin,2,customer,,userId or anonymousId is required\n" +
		"stdin,4,at,yesterday,\"\"\"yesterday\"\" is not a number of seconds since 1970\"\n"
	if string(b) != wantReport {
		t.Fatalf("report:\n%s\nwant\n%s", b, wantReport)
	}

	clean := filepath.Join(dir, "signups.jsonl")
	if err := os.WriteFile(clean, []byte(`{"type":"identify","userId":"c9","traits":{"email":"a@b.c"},"timestamp":"2026-11-01T00:00:00Z"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stderr := run("", clean); code != 0 || !strings.Contains(stderr, "1 imported, 0 refused") {
		t.Fatalf("clean file: exit code %d, stderr:\n%s", code, stderr)
	}
	// pulse import rows, its flags after the file as the usage writes it.
	rowsFile := filepath.Join(dir, "profiles.csv")
	if err := os.WriteFile(rowsFile, []byte("customer,age\nc1,31\nc2,40\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rows := func(args ...string) (int, string) {
		t.Helper()
		var eb bytes.Buffer
		cmd := exec.Command(bin, append([]string{"import", "rows"}, args...)...)
		cmd.Stderr = &eb
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), eb.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, eb.String()
	}
	if code, stderr := rows(rowsFile, "-feature-set", "user/profile/1", "-id", "customer", "-config", cfgPath); code != 0 || !strings.Contains(stderr, "2 rows from 1 file(s): 2 imported, 0 refused") {
		t.Fatalf("import rows: exit code %d, stderr:\n%s", code, stderr)
	}
	if code, stderr := rows(rowsFile, "-config", cfgPath); code != 1 || !strings.Contains(stderr, "-feature-set NAME") {
		t.Fatalf("import rows with no feature set: exit code %d, stderr:\n%s", code, stderr)
	}
	// pulse import clickhouse over a table in a real ClickHouse.
	native, httpAddr := testenv.ClickHouse(t)
	db := testenv.ClickHouseDatabase(t)
	for _, q := range []string{
		"CREATE TABLE orders (order_id String, customer_id String, total Float64, created_at DateTime('UTC')) ENGINE = MergeTree ORDER BY order_id",
		"INSERT INTO orders VALUES ('o1', 'c1', 19.9, '2026-11-30 10:00:00'), ('o2', 'c2', 5, '2026-11-30 10:05:00')",
	} {
		resp, err := http.Post("http://"+httpAddr+"/?database="+db, "text/plain", strings.NewReader(q))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", q, b)
		}
	}
	chArgs := []string{"-clickhouse", native, "-map", "userId=customer_id", "-map", `event="Order Completed"`, "-map", "properties.revenue=total", "-map", "timestamp=created_at"}
	code, stderr = run("", append([]string{"-query", "SELECT * FROM " + db + ".orders"}, chArgs...)...)
	if code != 0 || !strings.Contains(stderr, "2 rows from the ClickHouse query: 2 imported, 0 refused") || !strings.Contains(stderr, "columns not mapped (ignored): [order_id]") {
		t.Fatalf("import clickhouse: exit code %d, stderr:\n%s", code, stderr)
	}
	if code, stderr = run("", append([]string{"-query", "SELECT * FROM " + db + ".nope"}, chArgs...)...); code != 1 || !strings.Contains(stderr, "cannot run the query") {
		t.Fatalf("import clickhouse of a missing table: exit code %d, stderr:\n%s", code, stderr)
	}
	if code, stderr := run("", filepath.Join(dir, "nope.csv")); code != 1 || !strings.Contains(stderr, "cannot open") {
		t.Fatalf("missing file: exit code %d, stderr:\n%s", code, stderr)
	}
}
