package identity

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	json "github.com/goccy/go-json"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.txt expected outputs")

// TestDataDriven runs testdata/*.txt. Each case is a command line, input
// lines, "----", and the expected output, ending at a blank line. Lines
// starting with # between cases are comments.
//
//	options [max_anonymous_ids=N] [max_identifiers=N] [merge_known_users=true]
//	        [blocked=a|b] [traits=traits.email|context.traits.phone]
//	                           a fresh graph and timeline under these rules
//	link from=<kind:value> to=<kind:value> [kind=alias] [at=<ms>] [id=<messageId>]
//	                           folds one request; prints the decision
//	forget <kind:value> [at=<ms>] [id=<messageId>]
//	                           folds a deletion request; prints the decision
//	restore                    rebuilds the store from the links written so
//	                           far (tombstones included), as the linker does
//	canonical <entity>...      each entity id's canonical id now
//	profile <kind:value>       the profile the identifier is in
//	resolve at=<ms> <entity>... the timeline's canonical id at that time
//	owners <entity>...         the canonical ids each counted for over time
//	blocked                    input: one value per line; prints blocked or ok
//	requests                   input: one event JSON per line; prints its requests
func TestDataDriven(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) { runFile(t, path) })
	}
}

type ddRun struct {
	opts  Options
	store *MemStore
	graph *Graph
	links []Link
}

func (r *ddRun) reset(o Options) {
	r.opts, r.store, r.links = o, NewMemStore(), nil
	r.graph = NewGraph(o, r.store)
}

func runFile(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	r := &ddRun{}
	r.reset(DefaultOptions())
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	for i := 0; i < len(lines); {
		line := lines[i]
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
			i++
			continue
		}
		start := i
		var input []string
		for i++; i < len(lines) && lines[i] != "----"; i++ {
			input = append(input, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: no ----", path, start+1)
		}
		i++
		var want []string
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			want = append(want, lines[i])
		}
		got := r.run(t, fmt.Sprintf("%s:%d", path, start+1), line, input)
		out.WriteString(strings.Join(lines[start:start+1+len(input)], "\n") + "\n----\n")
		if got != "" {
			out.WriteString(got + "\n")
		}
		if w := strings.Join(want, "\n"); w != got && !*rewrite {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, start+1, line, got, w)
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (r *ddRun) run(t *testing.T, pos, line string, input []string) string {
	f := strings.Fields(line)
	args := map[string]string{}
	var pos0 []string
	for _, a := range f[1:] {
		if k, v, ok := strings.Cut(a, "="); ok {
			args[k] = v
		} else {
			pos0 = append(pos0, a)
		}
	}
	ident := func(s string) Identifier {
		id, err := ParseIdentifier(s)
		if err != nil {
			t.Fatalf("%s: %v", pos, err)
		}
		return id
	}
	ms := func(s string) time.Time {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("%s: time %q: %v", pos, s, err)
		}
		return time.UnixMilli(n).UTC()
	}
	switch f[0] {
	case "options":
		r.reset(ddOptions(t, pos, args))
		return ""
	case "link", "forget":
		req := Request{Kind: KindForget, MessageID: args["id"]}
		if f[0] == "link" {
			req.From, req.To, req.Kind = ident(args["from"]), ident(args["to"]), KindIdentify
			if k := args["kind"]; k != "" {
				req.Kind = LinkKind(k)
			}
		} else {
			req.From, req.To = ident(pos0[0]), ident(pos0[0])
		}
		if a := args["at"]; a != "" {
			req.At = ms(a)
		}
		d, err := r.graph.Apply(req)
		if err != nil {
			t.Fatalf("%s: %v", pos, err)
		}
		r.store.Commit(d)
		r.links = append(r.links, d.Links...)
		for _, id := range d.Forgotten {
			r.links = append(r.links, Link{Identifier: id.String()}) // the tombstone
		}
		return formatDecision(d)
	case "restore":
		s, err := RestoreMemStore(r.links)
		if err != nil {
			return "error: " + err.Error()
		}
		r.store = s
		r.graph = NewGraph(r.opts, s)
		return fmt.Sprintf("%d profiles", len(s.profiles))
	case "canonical":
		var out []string
		for _, e := range pos0 {
			out = append(out, e+" -> "+r.store.Canonical(e))
		}
		return strings.Join(out, "\n")
	case "profile":
		root, ok, _ := r.store.Root(ident(pos0[0]))
		if !ok {
			return "none"
		}
		p, _ := r.store.Profile(root)
		return formatProfile(p)
	case "resolve":
		tl := NewTimeline(r.links...)
		var out []string
		for _, e := range pos0 {
			out = append(out, e+" -> "+tl.Resolve(e, ms(args["at"])))
		}
		return strings.Join(out, "\n")
	case "owners":
		tl := NewTimeline(r.links...)
		var out []string
		for _, e := range pos0 {
			out = append(out, e+" -> "+strings.Join(tl.Owners(e), " "))
		}
		return strings.Join(out, "\n")
	case "blocked":
		var out []string
		for _, v := range input {
			s := "ok"
			if r.opts.IsBlocked(v) {
				s = "blocked"
			}
			out = append(out, strconv.Quote(v)+" "+s)
		}
		return strings.Join(out, "\n")
	case "requests":
		var out []string
		for _, in := range input {
			var ev event.Event
			if err := json.Unmarshal([]byte(in), &ev); err != nil {
				t.Fatalf("%s: %v", pos, err)
			}
			for _, q := range r.opts.Requests(&ev) {
				out = append(out, fmt.Sprintf("%s %s -> %s at=%d id=%s", q.Kind, q.From, q.To, q.At.UnixMilli(), q.MessageID))
			}
		}
		if len(out) == 0 {
			return "none"
		}
		return strings.Join(out, "\n")
	}
	t.Fatalf("%s: unknown command %q", pos, f[0])
	return ""
}

func ddOptions(t *testing.T, pos string, args map[string]string) Options {
	var c config.Config
	id := &c.Identity
	for k, v := range args {
		var err error
		switch k {
		case "max_anonymous_ids":
			id.MaxAnonymousIDs, err = strconv.Atoi(v)
		case "max_identifiers":
			id.MaxIdentifiers, err = strconv.Atoi(v)
		case "merge_known_users":
			id.MergeKnownUsers = v == "true"
		case "blocked":
			id.BlockedValues = strings.Split(v, "|")
		case "traits":
			id.TraitIdentifiers = strings.Split(v, "|")
		default:
			t.Fatalf("%s: unknown option %q", pos, k)
		}
		if err != nil {
			t.Fatalf("%s: %s: %v", pos, k, err)
		}
	}
	c.ApplyDefaults()
	return FromConfig(c.Identity)
}

func formatDecision(d Decision) string {
	switch d.Outcome {
	case Refused:
		return "refused: " + d.Reason
	case NoOp:
		return "noop"
	case Forgotten:
		out := []string{"forget"}
		if d.Removed != nil {
			out = append(out, "removed profile "+d.Removed.String())
		}
		for _, id := range d.Forgotten {
			out = append(out, "tombstone "+id.String())
		}
		for _, e := range d.Deletes {
			out = append(out, "delete "+e)
		}
		return strings.Join(out, "\n")
	}
	out := []string{"linked into " + d.Profile.Root.String()}
	if d.Removed != nil {
		out = append(out, "removed profile "+d.Removed.String())
	}
	for _, l := range d.Links {
		s := fmt.Sprintf("link %s -> %s", l.Identifier, l.CanonicalID)
		if l.Previous != "" {
			s += " (was " + l.Previous + ")"
		}
		out = append(out, s)
	}
	for _, m := range d.Moves {
		out = append(out, "move "+m.From+" -> "+m.To)
	}
	return strings.Join(out, "\n")
}

func formatProfile(p *Profile) string {
	ms := make([]string, len(p.Members))
	for i, m := range p.Members {
		ms[i] = fmt.Sprintf("%s@%d", m.ID, m.At.UnixMilli())
	}
	slices.Sort(ms)
	return "root " + p.Root.String() + ": " + strings.Join(ms, " ")
}
