package aggregate

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.txt expected outputs")

// TestDataDriven runs testdata/*.txt. Each case is a command line, input
// lines, "----", and the expected output, ending at a blank line:
//
//	define [lateness=<dur>]    input: YAML feature list; compiles a Set (states reset)
//	apply [entity=<id>]        input: one event per line; prints changed/unchanged/error
//	values at=<t> [entity=<id>]
//	next at=<t> [entity=<id>]
//	expire at=<t> [entity=<id>]
//	tiles [entity=<id>]        the tile indexes of each feature
//	encode [entity=<id>]       keeps the state's bytes (across define)
//	decode [entity=<id>] [hex=<bytes>]  replaces the state by the kept (or given) bytes
//	roundtrip [entity=<id>]    encode+decode gives the same bytes and values
//	fill n=<count> every=<dur> [from=<t>]   n events with distinct properties.p
//	kinds
//
// Times are milliseconds since the epoch, or Go durations since it (90s,
// 1h0m0.001s). An event line is key=value tokens: t, event, type (default
// track), id (messageId), user, and p.<key>, tr.<key>, ctx.<key> for
// properties, traits and context (values are JSON when they parse as JSON,
// else strings; 'single quotes' group spaces).
func TestDataDriven(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) { runDataDriven(t, path) })
	}
}

type ddCase struct {
	pos     string
	cmd     string
	args    map[string]string
	input   string
	want    string
	rawHead []string // command + input lines, for rewriting
}

func parseDataDriven(t *testing.T, path string) (cases []ddCase, preamble []string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	i := 0
	for i < len(lines) {
		line := lines[i]
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			if len(cases) == 0 {
				preamble = append(preamble, line)
			} else {
				cases[len(cases)-1].rawHead = append(cases[len(cases)-1].rawHead, "\x00"+line)
			}
			i++
			continue
		}
		c := ddCase{pos: fmt.Sprintf("%s:%d", path, i+1), args: map[string]string{}}
		fields := strings.Fields(line)
		c.cmd = fields[0]
		for _, a := range fields[1:] {
			k, v, _ := strings.Cut(a, "=")
			c.args[k] = v
		}
		c.rawHead = append(c.rawHead, line)
		i++
		var in []string
		for i < len(lines) && lines[i] != "----" {
			in = append(in, lines[i])
			c.rawHead = append(c.rawHead, lines[i])
			i++
		}
		if i == len(lines) {
			t.Fatalf("%s: missing ----", c.pos)
		}
		i++
		var out []string
		for i < len(lines) && lines[i] != "" {
			out = append(out, lines[i])
			i++
		}
		c.input = strings.Join(in, "\n")
		c.want = strings.Join(out, "\n")
		cases = append(cases, c)
	}
	return cases, preamble
}

func runDataDriven(t *testing.T, path string) {
	cases, preamble := parseDataDriven(t, path)
	h := &ddHarness{states: map[string]*State{}, kept: map[string][]byte{}}
	var rewritten strings.Builder
	for _, l := range preamble {
		rewritten.WriteString(l + "\n")
	}
	for _, c := range cases {
		got := strings.TrimRight(h.run(t, c), "\n")
		if *rewrite {
			var trailer []string
			for _, l := range c.rawHead {
				if strings.HasPrefix(l, "\x00") {
					trailer = append(trailer, l[1:])
					continue
				}
				rewritten.WriteString(l + "\n")
			}
			rewritten.WriteString("----\n" + got + "\n")
			for _, l := range trailer {
				rewritten.WriteString(l + "\n")
			}
			continue
		}
		if got != c.want {
			t.Errorf("%s: %s %v\ngot:\n%s\nwant:\n%s", c.pos, c.cmd, c.args, got, c.want)
		}
	}
	if *rewrite {
		out := strings.TrimRight(rewritten.String(), "\n") + "\n"
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type ddHarness struct {
	set    *Set
	states map[string]*State
	kept   map[string][]byte
}

func (h *ddHarness) state(c ddCase) *State {
	id := c.args["entity"]
	if id == "" {
		id = "u"
	}
	st, ok := h.states[id]
	if !ok {
		st = h.set.NewState()
		h.states[id] = st
	}
	return st
}

func (h *ddHarness) run(t *testing.T, c ddCase) string {
	t.Helper()
	if c.cmd != "define" && h.set == nil {
		t.Fatalf("%s: define first", c.pos)
	}
	at := func() time.Time {
		v, ok := c.args["at"]
		if !ok {
			t.Fatalf("%s: at= required", c.pos)
		}
		return time.UnixMilli(parseMillis(t, c.pos, v)).UTC()
	}
	var b strings.Builder
	switch c.cmd {
	case "define":
		var defs []config.Feature
		if err := yaml.Unmarshal([]byte(c.input), &defs); err != nil {
			t.Fatalf("%s: %v", c.pos, err)
		}
		for i := range defs {
			defs[i].Line = i + 1
		}
		var opts Options
		if v := c.args["lateness"]; v != "" {
			d, err := config.ParseDuration(v)
			if err != nil {
				t.Fatalf("%s: %v", c.pos, err)
			}
			opts.AllowedLateness = d.D()
		}
		set, err := Compile(defs, opts)
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("%s: error is not Errors: %v", c.pos, err)
			}
			for _, e := range errs {
				fmt.Fprintf(&b, "line %d: %s\n", e.Line, e.Error())
			}
			return b.String()
		}
		h.set = set
		h.states = map[string]*State{}
		return "ok"
	case "apply":
		st := h.state(c)
		for _, line := range strings.Split(c.input, "\n") {
			e := parseEvent(t, c.pos, line)
			changed, err := h.set.Apply(st, e)
			switch {
			case err != nil:
				fmt.Fprintf(&b, "error: %v (too late: %v)\n", err, errors.Is(err, ErrTooLate))
			case changed:
				b.WriteString("changed\n")
			default:
				b.WriteString("unchanged\n")
			}
		}
	case "values":
		vals := h.set.Values(h.state(c), at(), nil)
		for i, name := range h.set.Names() {
			fmt.Fprintf(&b, "%s = %s\n", name, formatValue(vals[i]))
		}
	case "fill":
		// fill n=<count> every=<dur> [from=<t>]: events with distinct
		// properties.p = "v<i>", for bounds no one would type out.
		n, _ := strconv.Atoi(c.args["n"])
		every := parseMillis(t, c.pos, c.args["every"])
		from := int64(0)
		if v := c.args["from"]; v != "" {
			from = parseMillis(t, c.pos, v)
		}
		st := h.state(c)
		for i := range n {
			e := &event.Event{Type: event.Track, MessageID: fmt.Sprint("f", i),
				Timestamp:  time.UnixMilli(from + int64(i)*every).UTC(),
				Properties: map[string]any{"p": fmt.Sprint("v", i)}}
			if _, err := h.set.Apply(st, e); err != nil {
				return "error: " + err.Error()
			}
		}
		return fmt.Sprintf("%d events", n)
	case "kinds":
		for i, name := range h.set.Names() {
			fmt.Fprintf(&b, "%s: %s\n", name, h.set.Kinds()[i])
		}
	case "next":
		next, ok := h.set.NextChange(h.state(c), at())
		if !ok {
			return "none"
		}
		return formatMillis(next.UnixMilli())
	case "expire":
		return fmt.Sprintf("no windows: %v, empty: %v", h.set.Expire(h.state(c), at()), h.state(c).Empty())
	case "tiles":
		st := h.state(c)
		for _, fi := range h.set.aggs {
			f := &h.set.feats[fi]
			sl := &st.f[f.slot]
			var idx []string
			for _, x := range sl.num {
				idx = append(idx, strconv.FormatInt(x.idx, 10))
			}
			for _, x := range sl.pt {
				idx = append(idx, strconv.FormatInt(x.idx, 10))
			}
			for _, x := range sl.set {
				kind := "exact"
				if x.d.sketch != nil {
					kind = "sketch"
				}
				idx = append(idx, fmt.Sprintf("%d(%s)", x.idx, kind))
			}
			for _, x := range sl.list {
				idx = append(idx, formatMillis(x.ts))
			}
			fmt.Fprintf(&b, "%s: [%s]\n", f.def.Name, strings.Join(idx, " "))
		}
		fmt.Fprintf(&b, "newest: %s\n", formatMillis(st.NewestMillis()))
	case "encode":
		buf := h.state(c).AppendBinary(nil)
		h.kept[c.args["entity"]] = buf
		if len(buf) <= 32 {
			return fmt.Sprintf("%d bytes: %x", len(buf), buf)
		}
		return fmt.Sprintf("%d bytes", len(buf))
	case "decode":
		buf := h.kept[c.args["entity"]]
		if x, ok := c.args["hex"]; ok {
			var err error
			if buf, err = hex.DecodeString(x); err != nil {
				t.Fatalf("%s: %v", c.pos, err)
			}
		}
		st, err := h.set.DecodeState(buf)
		if err != nil {
			return "error: " + err.Error()
		}
		id := c.args["entity"]
		if id == "" {
			id = "u"
		}
		h.states[id] = st
		return "ok"
	case "roundtrip":
		st := h.state(c)
		buf := st.AppendBinary(nil)
		st2, err := h.set.DecodeState(buf)
		if err != nil {
			return "error: " + err.Error()
		}
		if buf2 := st2.AppendBinary(nil); string(buf2) != string(buf) {
			return "error: re-encoding differs"
		}
		now := time.UnixMilli(st.NewestMillis())
		a := fmt.Sprint(h.set.Values(st, now, nil))
		if z := fmt.Sprint(h.set.Values(st2, now, nil)); a != z {
			return fmt.Sprintf("error: values differ:\n%s\n%s", a, z)
		}
		return fmt.Sprintf("ok, %d bytes", len(buf))
	default:
		t.Fatalf("%s: unknown command %q", c.pos, c.cmd)
	}
	return b.String()
}

func parseMillis(t *testing.T, pos, s string) int64 {
	t.Helper()
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	d, err := config.ParseDuration(strings.TrimPrefix(s, "-"))
	if err != nil {
		t.Fatalf("%s: bad time %q", pos, s)
	}
	if strings.HasPrefix(s, "-") {
		return -d.D().Milliseconds()
	}
	return d.D().Milliseconds()
}

func formatMillis(ms int64) string {
	if ms == 0 {
		return "0"
	}
	return (time.Duration(ms) * time.Millisecond).String()
}

func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "nil"
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		return strconv.Quote(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = formatValue(e)
		}
		return "[" + strings.Join(parts, " ") + "]"
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + ":" + formatValue(x[k])
		}
		return "{" + strings.Join(parts, " ") + "}"
	}
	return fmt.Sprintf("%T(%v)", v, v)
}

// splitTokens splits on spaces, keeping 'single quoted' runs together.
func splitTokens(line string) []string {
	var out []string
	var cur strings.Builder
	quoted, any := false, false
	sc := bufio.NewScanner(strings.NewReader(line))
	sc.Split(bufio.ScanRunes)
	for sc.Scan() {
		r := sc.Text()
		switch {
		case r == "'":
			quoted = !quoted
			any = true
		case r == " " && !quoted:
			if any {
				out = append(out, cur.String())
			}
			cur.Reset()
			any = false
		default:
			cur.WriteString(r)
			any = true
		}
	}
	if any {
		out = append(out, cur.String())
	}
	return out
}

func parseEvent(t *testing.T, pos, line string) *event.Event {
	t.Helper()
	e := &event.Event{Type: event.Track}
	put := func(m *map[string]any, path, raw string) {
		if *m == nil {
			*m = map[string]any{}
		}
		var v any
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			v = raw
		}
		keys := strings.Split(path, ".")
		cur := *m
		for _, k := range keys[:len(keys)-1] {
			next, ok := cur[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[k] = next
			}
			cur = next
		}
		cur[keys[len(keys)-1]] = v
	}
	for _, tok := range splitTokens(line) {
		k, v, ok := strings.Cut(tok, "=")
		if !ok {
			t.Fatalf("%s: bad token %q", pos, tok)
		}
		switch {
		case k == "t":
			e.Timestamp = time.UnixMilli(parseMillis(t, pos, v)).UTC()
		case k == "event":
			e.Event = v
		case k == "type":
			e.Type = event.Type(v)
		case k == "id":
			e.MessageID = v
		case k == "user":
			e.UserID = v
		case k == "name":
			e.Name = v
		case strings.HasPrefix(k, "p."):
			put(&e.Properties, k[2:], v)
		case strings.HasPrefix(k, "tr."):
			put(&e.Traits, k[3:], v)
		case strings.HasPrefix(k, "ctx."):
			put(&e.Context, k[4:], v)
		default:
			t.Fatalf("%s: unknown event key %q", pos, k)
		}
	}
	return e
}
