package stream

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	json "github.com/goccy/go-json"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output in testdata/ with the actual one")

// TestTester runs testdata/*.txt through a task with no Kafka and no wall
// clock (goka's tester, pebble's data-driven files): records go straight
// to processBatch, ticks to the timer's fire, commits to memory, state to
// Pebble on an in-memory file system. Each case is a command line of
// key=value arguments, input lines, "----", and the expected output up to
// a blank line; -rewrite writes the actual output instead. Commands:
//
//	config                  input: the YAML config (stream, features,
//	                        segments); starts a new task of partition 0
//	batch [now=T] [hwm=N] [deadletters=json] [crash=POINT]
//	                        input: one record per line (below); prints the
//	                        batch's counts, warnings, and each committed
//	                        transaction's records (sorted), then "commit".
//	                        With crash, the commit fails at that hook point
//	                        and the task is reopened as after a crash: the
//	                        open transaction aborted, the cache dropped, the
//	                        state read from Pebble, then the changelog after
//	                        it replayed and the pending vectors rewritten
//	                        With stream.commit_interval in the config the
//	                        batch may be kept open ("kept open"): its
//	                        counts and records come with its commit
//	commit-open             commits the transaction kept open, as the
//	                        worker does when its interval is up; every
//	                        other command refuses to run while one is
//	tick [now=T]            fires the due timers, printing as batch does
//	rfm [now=T] [chunk=N] [crash=POINT]
//	                        the timer's RFM work (rfmTick): publish the
//	                        partition's summary and the boundaries, switch
//	                        to them, re-score; prints the boundaries and
//	                        the commits as batch does; chunk sets the
//	                        re-score's chunk (TimerChunk). With crash, the
//	                        re-score fails there and the task is reopened
//	vector id=ID            the entity's vector in the online store
//	state id=ID             the entity's state in Pebble: timer, members,
//	                        values at now
//	timers                  the timer index
//	meta                    the task's next offset and pending entities
//	searches                how many times rfmDue searched for the moment
//	                        recency passes a boundary since the last
//	                        searches (or the config)
//
// Times T are durations from 2025-06-01T12:00:00Z (t0): 0, -72h, +30d,
// 90m. A record line is key=value tokens: offset (default: the next one),
// key (default: the entity id), raw=<the rest of the line> for a value
// that is not an event, or an event: type (default track), event, id
// (messageId), user, anon, prev, t (default 0), received (default t),
// p.<name>, tr.<name> and c.<name> for properties, traits and context. A
// value is a JSON string when quoted, else runs to the next space;
// property, trait and context values are JSON when they parse as JSON.
func TestTester(t *testing.T) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if name := e.Name(); strings.HasSuffix(name, ".txt") {
			n++
			t.Run(name, func(t *testing.T) { testFile(t, filepath.Join("testdata", name)) })
		}
	}
	if n == 0 {
		t.Fatal("no testdata/*.txt")
	}
}

// testCase is one command of a file; want spans lines[from:to].
type testCase struct {
	line     int
	cmd      string
	args     map[string]string
	input    []string
	from, to int
}

func testFile(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var out []string // the file rewritten
	done := 0
	st := &tester{t: t}
	defer st.close()
	for i := 0; i < len(lines); i++ {
		if l := strings.TrimSpace(lines[i]); l == "" || l[0] == '#' {
			continue
		}
		c := testCase{line: i + 1, args: map[string]string{}}
		head, err := splitTokens(lines[i])
		if err != nil {
			t.Fatalf("%s:%d: %v", path, c.line, err)
		}
		c.cmd = head[0].key
		for _, a := range head[1:] {
			c.args[a.key] = a.val
		}
		for i++; i < len(lines) && lines[i] != "----"; i++ {
			c.input = append(c.input, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: no ----", path, c.line)
		}
		c.from = i + 1
		for c.to = c.from; c.to < len(lines) && lines[c.to] != ""; c.to++ {
		}
		i = c.to
		got := strings.TrimRight(st.run(path, c), "\n")
		if *rewrite {
			out = append(append(out, lines[done:c.from]...), strings.Split(got, "\n")...)
			done = c.to
		} else if want := strings.Join(lines[c.from:c.to], "\n"); got != want {
			t.Errorf("%s:%d: %s\n--- want:\n%s\n--- got:\n%s", path, c.line, c.cmd, want, got)
		}
	}
	if *rewrite {
		out = append(out, lines[done:]...)
		if err := os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type token struct{ key, val string }

// splitTokens reads a line of words and key=value pairs; a value that
// starts with a quote is a JSON string, raw= takes the rest of the line.
func splitTokens(line string) ([]token, error) {
	var toks []token
	for s := strings.TrimSpace(line); s != ""; s = strings.TrimSpace(s) {
		sp := strings.IndexByte(s, ' ')
		if sp < 0 {
			sp = len(s)
		}
		eq := strings.IndexByte(s[:sp], '=')
		if eq < 0 {
			toks = append(toks, token{key: s[:sp]})
			s = s[sp:]
			continue
		}
		word := s[:eq]
		s = s[eq+1:]
		var val string
		switch {
		case word == "raw":
			val, s = s, ""
		case strings.HasPrefix(s, `"`):
			end := 1
			for ; end < len(s) && s[end] != '"'; end++ {
				if s[end] == '\\' {
					end++
				}
			}
			if end >= len(s) {
				return nil, fmt.Errorf("unterminated string at %q", s)
			}
			if err := json.Unmarshal([]byte(s[:end+1]), &val); err != nil {
				return nil, err
			}
			s = s[end+1:]
		default:
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		toks = append(toks, token{word, val})
	}
	return toks, nil
}
