package backfill

import (
	"context"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/identity"
)

// VerifyOptions select the sample Verify checks.
type VerifyOptions struct {
	// Sample is how many entities to check, picked by a hash of their id
	// (the same sample every run). Default 1000.
	Sample int
	// Entities checks these instead of a sample.
	Entities []string
	// Features restricts the check; empty checks every user feature.
	Features []string
	// Examples is how many mismatches to list per feature. Default 3.
	Examples int
	Progress io.Writer
	// Links are the identity table (pulse.identity) when identity
	// resolution is on: an entity merged into a person is checked as that
	// person, whose features count the events of all its ids. Nil: every
	// entity on its own.
	Links []identity.Link
}

// Mismatch is one value that differs between online and offline.
type Mismatch struct {
	EntityID        string
	Online, Offline any
	// Reason explains it: the stream had not yet seen some events (lag),
	// the vector is older than a window's edge, or the values differ.
	Reason string
}

// FeatureCheck is one feature's result.
type FeatureCheck struct {
	Feature    string
	Compared   int
	Mismatches int
	Lagging    int // mismatches explained by events the stream had not seen
	Examples   []Mismatch
}

// Rate is the share of compared values that differ.
func (f FeatureCheck) Rate() float64 {
	if f.Compared == 0 {
		return 0
	}
	return float64(f.Mismatches) / float64(f.Compared)
}

// VerifyReport is Verify's answer.
type VerifyReport struct {
	Sampled int      // entities picked from history
	Missing []string // sampled entities the online store does not have
	// Merged counts the sampled entities merged into another person
	// (VerifyOptions.Links): that person is checked instead.
	Merged   int
	Features []FeatureCheck
}

// Verify recomputes, for a sample of entities, each feature as of the time
// the online vector was computed (its UpdatedAt) from the events up to then,
// and compares with the online value. Numbers agree within a relative 1e-9
// (sums in another order).
func Verify(ctx context.Context, cfg *config.Config, r *history.Reader, store featurestore.Store, opts VerifyOptions) (*VerifyReport, error) {
	set, idx, err := compile(cfg, opts.Features)
	if err != nil {
		return nil, err
	}
	if opts.Sample <= 0 {
		opts.Sample = 1000
	}
	if opts.Examples <= 0 {
		opts.Examples = 3
	}
	ids := opts.Entities
	if ids == nil {
		ids, err = sample(ctx, r, opts.Sample)
		if err != nil {
			return nil, err
		}
	}
	rep := &VerifyReport{Sampled: len(ids)}
	prof, err := newProfiles(opts.Links)
	if err != nil {
		return nil, err
	}
	ids = prof.canonicals(ids, rep)
	names := set.Names()
	checks := make([]FeatureCheck, len(idx))
	for j, i := range idx {
		checks[j].Feature = names[i]
	}
	vecs, found, err := store.GetMany(ctx, set.Entity(), ids)
	if err != nil {
		return nil, fmt.Errorf("cannot read online vectors: %w", err)
	}
	online := map[string]featurestore.Vector{}
	for i, id := range ids {
		if found[i] {
			online[id] = vecs[i]
		} else {
			rep.Missing = append(rep.Missing, id)
		}
	}
	var present []string
	for _, id := range ids {
		if _, ok := online[id]; ok {
			present = append(present, id)
		}
	}
	n := 0
	p := newProgress(opts.Progress, "verify", func() string { return fmt.Sprintf("%d/%d entities", n, len(present)) })
	var vals []any
	for start := 0; start < len(present); start += entityLabelsLimit {
		chunk := present[start:min(start+entityLabelsLimit, len(present))]
		// Each person's ids' events, each id's into a state of its own,
		// merged into the person's (aggregate.Merge), as the stream does.
		states := map[string]*aggregate.State{}
		unseen := map[string]int{}
		err = r.EachEntity(ctx, replayFilter(set, history.EventFilter{Entities: prof.members(chunk)}), func(id string, evs []*event.Event) error {
			c := prof.canonical(id)
			v := online[c]
			at := v.UpdatedAt.UnixMilli()
			st := set.NewState()
			for _, e := range evs {
				if e.ReceivedAt.UnixMilli() > at {
					unseen[c]++
				}
				if e.Timestamp.UnixMilli() <= at {
					set.Apply(st, e)
				}
			}
			if states[c] == nil {
				states[c] = st
				return nil
			}
			for i := range names {
				if fp, ok := set.Fingerprint(i); ok {
					set.Merge(states[c], st, fp)
				}
			}
			return nil
		})
		if err != nil {
			p.done()
			return nil, err
		}
		for _, id := range chunk {
			if st := states[id]; st != nil { // else no events in history: not compared
				vals = set.Values(st, online[id].UpdatedAt, vals)
				compare(checks, idx, names, id, online[id], vals, unseen[id], opts.Examples)
				n++
			}
		}
	}
	p.done()
	rep.Features = checks
	return rep, nil
}

// compare counts, for each checked feature, whether entity id's online
// vector v agrees with the recomputed vals; unseen is how many of its
// events came after v was computed.
func compare(checks []FeatureCheck, idx []int, names []string, id string, v featurestore.Vector, vals []any, unseen, examples int) {
	for j, i := range idx {
		c := &checks[j]
		c.Compared++
		on := v.Features[names[i]]
		if same(on, vals[i]) {
			continue
		}
		c.Mismatches++
		reason := "values differ: the stream applied other events, or other definitions (config changed without a replay?)"
		if unseen > 0 {
			c.Lagging++
			reason = fmt.Sprintf("stream lag: %d event(s) received after the vector was computed", unseen)
		}
		if len(c.Examples) < examples {
			c.Examples = append(c.Examples, Mismatch{EntityID: id, Online: on, Offline: vals[i], Reason: reason})
		}
	}
}

// profiles maps entity ids to their person's canonical id and back, from
// the identity table's latest links; empty without links.
type profiles struct {
	canon  map[string]string   // entity id -> canonical id, merged ones only
	others map[string][]string // canonical id -> its other entity ids
}

func newProfiles(links []identity.Link) (profiles, error) {
	p := profiles{canon: map[string]string{}, others: map[string][]string{}}
	if len(links) == 0 {
		return p, nil
	}
	g, err := identity.RestoreMemStore(links)
	if err != nil {
		return p, fmt.Errorf("cannot read the identity links: %w", err)
	}
	seen := map[string]bool{}
	for _, l := range links {
		id, err := identity.ParseIdentifier(l.Identifier)
		if err != nil || !id.Entity() || seen[id.Value] {
			continue
		}
		seen[id.Value] = true
		if c := g.Canonical(id.Value); c != id.Value {
			p.canon[id.Value] = c
			p.others[c] = append(p.others[c], id.Value)
		}
	}
	return p, nil
}

func (p profiles) canonical(id string) string {
	if c, ok := p.canon[id]; ok {
		return c
	}
	return id
}

// canonicals replaces each merged id by its person's, once each, and
// counts the merged ones in rep.
func (p profiles) canonicals(ids []string, rep *VerifyReport) []string {
	if len(p.canon) == 0 {
		return ids
	}
	out := make([]string, 0, len(ids))
	seen := map[string]bool{}
	for _, id := range ids {
		c := p.canonical(id)
		if c != id {
			rep.Merged++
		}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// members lists the entity ids whose events count for the people of ids.
func (p profiles) members(ids []string) []string {
	out := slices.Clone(ids)
	for _, id := range ids {
		out = append(out, p.others[id]...)
	}
	return out
}

// sample picks n entity ids from history, the same ones every run.
func sample(ctx context.Context, r *history.Reader, n int) ([]string, error) {
	rows, err := r.Conn().Query(ctx, fmt.Sprintf("SELECT entity_id FROM %s GROUP BY entity_id ORDER BY cityHash64(entity_id) LIMIT %d", r.Table("events"), n))
	if err != nil {
		return nil, fmt.Errorf("cannot sample entities: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// same compares an online value (as the store decoded it) with a
// recomputed one.
func same(online, offline any) bool {
	a, aok := online.(float64)
	b, bok := offline.(float64)
	if aok && bok {
		if a == b || (math.IsNaN(a) && math.IsNaN(b)) {
			return true
		}
		return math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
	}
	if reflect.DeepEqual(online, offline) {
		return true
	}
	// Lists and other JSON values: compare their JSON.
	ja, err1 := json.Marshal(online)
	jb, err2 := json.Marshal(offline)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// Write prints the report for people.
func (r *VerifyReport) Write(w io.Writer) {
	fmt.Fprintf(w, "sampled %d entities; %d not in the online store\n", r.Sampled, len(r.Missing))
	if len(r.Missing) > 0 {
		ex := r.Missing[:min(5, len(r.Missing))]
		fmt.Fprintf(w, "  missing online (stream behind, or entity only in history): %s\n", strings.Join(ex, ", "))
	}
	if r.Merged > 0 {
		fmt.Fprintf(w, "  %d merged into another person (identity): checked as that person, with all its ids' events\n", r.Merged)
	}
	fs := append([]FeatureCheck(nil), r.Features...)
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].Rate() > fs[j].Rate() })
	fmt.Fprintf(w, "%-32s %9s %10s %8s %8s\n", "feature", "compared", "mismatches", "rate", "lagging")
	for _, f := range fs {
		fmt.Fprintf(w, "%-32s %9d %10d %7.3f%% %8d\n", f.Feature, f.Compared, f.Mismatches, 100*f.Rate(), f.Lagging)
	}
	for _, f := range fs {
		for _, m := range f.Examples {
			fmt.Fprintf(w, "  %s %s: online %v, recomputed %v — %s\n", f.Feature, m.EntityID, show(m.Online), show(m.Offline), m.Reason)
		}
	}
}

// Mismatches is the total count over features.
func (r *VerifyReport) Mismatches() int {
	n := 0
	for _, f := range r.Features {
		n += f.Mismatches
	}
	return n
}

func show(v any) string {
	if t, ok := v.(float64); ok && t > 1e12 && t < 1e14 {
		return fmt.Sprintf("%v (%s)", t, time.UnixMilli(int64(t)).UTC().Format(timeLayout))
	}
	b, _ := json.Marshal(v)
	return string(b)
}
