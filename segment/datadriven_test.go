package segment

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output in testdata/ with the actual one")

// TestDataDriven runs every file under testdata/ (pebble style): a command
// line, optional input lines, "----", then the expected output up to a blank
// line. Commands:
//
//	features                name kind, one per line (kinds: number string list any)
//	compile                 name: rule, one per line (an indented line continues
//	                        the rule); replaces the Set (a reload)
//	eval [entity=u1] [now=T] [feature=JSON ...]
//	                        decode the entity's stored membership, evaluate,
//	                        print members and changes, store the new one.
//	                        Feature values stick per entity; now is RFC 3339,
//	                        epoch ms, or +duration from the last now.
//	decode [entity=u1]      print the stored membership as the Set reads it
//	encode [entity=u1]      print the stored encoding in hex
//	record segment=S change=enter|exit id=ID at=T cause=C [entity=user]
//	                        print NewRecord's JSON
func TestDataDriven(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) { runFile(t, path) })
	}
}

type ddCase struct {
	line     int
	cmd      string
	args     []ddArg
	input    []string
	expected string
	// span of the expected output in the file's lines, for -rewrite
	outFrom, outTo int
}

type ddArg struct{ key, val string }

func (c *ddCase) arg(key, def string) string {
	for _, a := range c.args {
		if a.key == key {
			return a.val
		}
	}
	return def
}

func parseFile(t *testing.T, path string) ([]string, []*ddCase) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var cases []*ddCase
	for i := 0; i < len(lines); {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "#") {
			i++
			continue
		}
		c := &ddCase{line: i + 1}
		cmd, rest, _ := strings.Cut(l, " ")
		c.cmd = cmd
		args, err := splitArgs(rest)
		if err != nil {
			t.Fatalf("%s:%d: %v", path, i+1, err)
		}
		c.args = args
		i++
		for ; i < len(lines) && lines[i] != "----"; i++ {
			c.input = append(c.input, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: %s: no ----", path, c.line, cmd)
		}
		i++
		c.outFrom = i
		var out []string
		for ; i < len(lines) && lines[i] != ""; i++ {
			out = append(out, lines[i])
		}
		c.outTo = i
		c.expected = strings.Join(out, "\n")
		cases = append(cases, c)
	}
	return lines, cases
}

// splitArgs reads key=value pairs; a value may be a JSON string or array
// holding spaces.
func splitArgs(s string) ([]ddArg, error) {
	var args []ddArg
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		key, rest, ok := strings.Cut(s, "=")
		if !ok || strings.ContainsAny(key, " \t") {
			return nil, fmt.Errorf("want key=value, got %q", s)
		}
		end, depth, inStr := 0, 0, false
	scan:
		for ; end < len(rest); end++ {
			switch ch := rest[end]; {
			case inStr && ch == '\\':
				end++
			case ch == '"':
				inStr = !inStr
			case inStr:
			case ch == '[' || ch == '{':
				depth++
			case ch == ']' || ch == '}':
				depth--
			case (ch == ' ' || ch == '\t') && depth == 0:
				break scan
			}
		}
		args = append(args, ddArg{key, rest[:end]})
		s = rest[end:]
	}
	return args, nil
}

type ddState struct {
	names    []string
	kinds    []Kind
	set      *Set
	now      time.Time
	values   map[string]map[string]any // entity -> feature -> value
	stored   map[string][]byte         // entity -> encoded membership
	lastSeen map[string][2]uint64      // "seg" -> errors, missing already reported
}

func runFile(t *testing.T, path string) {
	lines, cases := parseFile(t, path)
	st := &ddState{
		now:      time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		values:   map[string]map[string]any{},
		stored:   map[string][]byte{},
		lastSeen: map[string][2]uint64{},
	}
	var rewritten []string
	last := 0
	for _, c := range cases {
		got, err := st.run(c)
		if err != nil {
			t.Fatalf("%s:%d: %s: %v", path, c.line, c.cmd, err)
		}
		got = strings.TrimRight(got, "\n")
		if *rewrite {
			rewritten = append(rewritten, lines[last:c.outFrom]...)
			if got != "" {
				rewritten = append(rewritten, strings.Split(got, "\n")...)
			}
			last = c.outTo
			continue
		}
		if got != c.expected {
			t.Errorf("%s:%d: %s\n--- want:\n%s\n--- got:\n%s", path, c.line, c.cmd, c.expected, got)
		}
	}
	if *rewrite {
		rewritten = append(rewritten, lines[last:]...)
		if err := os.WriteFile(path, []byte(strings.Join(rewritten, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (st *ddState) run(c *ddCase) (string, error) {
	var b strings.Builder
	switch c.cmd {
	case "features":
		st.names, st.kinds = nil, nil
		for _, l := range c.input {
			name, kind, _ := strings.Cut(strings.TrimSpace(l), " ")
			k, err := ParseKind(strings.TrimSpace(kind))
			if err != nil {
				return "", err
			}
			st.names = append(st.names, name)
			st.kinds = append(st.kinds, k)
		}
		fmt.Fprintf(&b, "%d features", len(st.names))

	case "compile":
		var segs []config.Segment
		for _, l := range c.input {
			if strings.HasPrefix(l, " ") && len(segs) > 0 {
				segs[len(segs)-1].Rule += "\n" + strings.TrimSpace(l) // continues the rule
				continue
			}
			name, rule, _ := strings.Cut(l, ":")
			segs = append(segs, config.Segment{Name: strings.TrimSpace(name), Rule: strings.TrimSpace(rule)})
		}
		set, err := Compile(segs, st.names, st.kinds)
		if err != nil {
			if es, ok := err.(Errors); ok {
				for _, e := range es {
					fmt.Fprintln(&b, e)
				}
				return b.String(), nil
			}
			return "error: " + err.Error(), nil
		}
		st.set = set
		st.lastSeen = map[string][2]uint64{}
		fmt.Fprintf(&b, "ok: %s", strings.Join(set.Names(), " "))

	case "eval":
		entity := c.arg("entity", "u1")
		vals := st.values[entity]
		if vals == nil {
			vals = map[string]any{}
			st.values[entity] = vals
		}
		for _, a := range c.args {
			switch a.key {
			case "entity":
			case "now":
				now, err := st.parseTime(a.val)
				if err != nil {
					return "", err
				}
				st.now = now
			default:
				if !contains(st.names, a.key) {
					return "", fmt.Errorf("unknown feature %s", a.key)
				}
				var v any
				if err := json.Unmarshal([]byte(a.val), &v); err != nil {
					return "", fmt.Errorf("%s: %w", a.key, err)
				}
				vals[a.key] = v
			}
		}
		values := make([]any, len(st.names))
		for i, n := range st.names {
			values[i] = vals[n]
		}
		old, stale, err := st.set.DecodeMembership(st.stored[entity], nil)
		if err != nil {
			return "", err
		}
		if stale && st.stored[entity] != nil {
			fmt.Fprintln(&b, "stale: rules changed since stored")
		}
		m := st.set.Eval(values, st.now, nil)
		fmt.Fprintf(&b, "members: %s\n", st.members(m))
		for _, ch := range st.set.Diff(old, m, nil) {
			fmt.Fprintln(&b, ch)
		}
		st.stored[entity] = st.set.AppendMembership(nil, m)
		st.printStats(&b)

	case "decode":
		m, stale, err := st.set.DecodeMembership(st.stored[c.arg("entity", "u1")], nil)
		if err != nil {
			return "error: " + err.Error(), nil
		}
		fmt.Fprintf(&b, "members: %s stale=%v", st.members(m), stale)

	case "encode":
		fmt.Fprintf(&b, "%s", hex.EncodeToString(st.stored[c.arg("entity", "u1")]))

	case "record":
		at, err := st.parseTime(c.arg("at", "0"))
		if err != nil {
			return "", err
		}
		var features map[string]any
		if f := c.arg("features", ""); f != "" {
			if err := json.Unmarshal([]byte(f), &features); err != nil {
				return "", err
			}
		}
		ch := Change{Segment: c.arg("segment", ""), Enter: c.arg("change", "") == "enter"}
		rec := NewRecord(ch, c.arg("entity", "user"), c.arg("id", ""), at, c.arg("cause", ""), features)
		out, err := json.Marshal(rec)
		if err != nil {
			return "", err
		}
		b.Write(out)

	default:
		return "", fmt.Errorf("unknown command")
	}
	return b.String(), nil
}

func (st *ddState) members(m Membership) string {
	in := st.set.Members(m)
	if len(in) == 0 {
		return "none"
	}
	return strings.Join(in, " ")
}

// printStats prints the failures counted since the last eval.
func (st *ddState) printStats(b *strings.Builder) {
	for i, n := range st.set.Names() {
		s := st.set.Stats(i)
		seen := st.lastSeen[n]
		if s.Missing > seen[1] {
			fmt.Fprintf(b, "missing: %s\n", n)
		}
		if s.Errors > seen[0] {
			fmt.Fprintf(b, "error: %v\n", s.LastError)
		}
		st.lastSeen[n] = [2]uint64{s.Errors, s.Missing}
	}
}

func (st *ddState) parseTime(s string) (time.Time, error) {
	if rest, ok := strings.CutPrefix(s, "+"); ok {
		d, err := config.ParseDuration(rest)
		return st.now.Add(d.D()), err
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms).UTC(), nil
	}
	return time.Parse(time.RFC3339, s)
}
