package backfill

import (
	"context"
	"fmt"
	"io"
	"math"
	"reflect"
	"sort"
	"strings"
	"time"

	json "github.com/goccy/go-json"
	"github.com/pulse-rt/pulse/aggregate"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/rfm"
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
	// RFM are the boundaries the stream scores with (the RFM topic's
	// newest, kafka.NewestRFMBoundaries): with them, and an rfm block in
	// the config, rfm_r, rfm_f, rfm_m and rfm_group are checked too,
	// recomputed with rfm.Assign from the recomputed values. Nil skips
	// them (naming one in Features is then an error).
	RFM      *rfm.Boundaries
	Progress io.Writer
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
	Sampled  int      // entities picked from history
	Missing  []string // sampled entities the online store does not have
	Features []FeatureCheck
}

// Verify recomputes, for a sample of entities, each feature as of the time
// the online vector was computed (its UpdatedAt) from the events up to then,
// and compares with the online value. Numbers agree within a relative 1e-9
// (sums in another order).
//
// A predictive trait is checked the same way: its model scores the
// recomputed values, and the score is compared with the online one.
//
// The RFM features are checked with opts.RFM: the scores and group that
// rfm.Assign gives for the recomputed recency, frequency and monetary
// values. A vector the stream has not re-scored since those boundaries
// came differs; its mismatch says so.
func Verify(ctx context.Context, cfg *config.Config, r *history.Reader, store featurestore.Store, opts VerifyOptions) (*VerifyReport, error) {
	featureNames, traitNames, rfmNames := splitChecks(cfg, opts.Features)
	set, idx, err := compile(cfg, featureNames)
	if err != nil {
		return nil, err
	}
	if featureNames != nil && len(featureNames) == 0 {
		idx = nil // traits or RFM only
	}
	traits, err := compileTraits(cfg, set, traitNames)
	if err != nil {
		return nil, err
	}
	rc, err := compileRFM(cfg, set, rfmNames, opts.RFM, len(opts.Features) > 0)
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
	ppl, err := loadPeople(ctx, cfg, r)
	if err != nil {
		return nil, err
	}
	v := &verifier{set: set, idx: idx, traits: traits, rfm: rc, names: set.Names(), examples: opts.Examples, online: map[string]featurestore.Vector{},
		checks: make([]FeatureCheck, len(idx)+len(traits)), parts: newPartials[string](set), unseen: map[string]int{}}
	for j, i := range idx {
		v.checks[j].Feature = v.names[i]
	}
	for j := range traits {
		v.checks[len(idx)+j].Feature = traits[j].name
	}
	if rc != nil {
		for _, n := range rc.names {
			v.checks = append(v.checks, FeatureCheck{Feature: n})
		}
	}
	rep := &VerifyReport{Sampled: len(ids)}
	present, err := v.readOnline(ctx, store, ppl, ids, rep)
	if err != nil {
		return nil, err
	}
	p := newProgress(opts.Progress, "verify", func() string { return fmt.Sprintf("%d/%d entities", v.n, len(present)) })
	defer p.done()
	for start := 0; start < len(present); start += entityLabelsLimit {
		if err := v.replay(ctx, r, ppl, present[start:min(start+entityLabelsLimit, len(present))]); err != nil {
			return nil, err
		}
	}
	rep.Features = v.checks
	return rep, nil
}

// verifier recomputes and compares the sampled persons' features.
type verifier struct {
	set      *aggregate.Set
	idx      []int
	traits   []traitCheck // checked after the features (checks[len(idx)+j])
	rfm      *rfmCheck    // then the RFM features (nil: none)
	names    []string
	examples int
	online   map[string]featurestore.Vector // by person
	checks   []FeatureCheck
	vals     []any
	n        int // persons compared
	// parts holds the partial states of the ids of persons of several
	// ids (identity), unseen the events each person's vector had not seen.
	parts  *partials[string]
	unseen map[string]int
}

// readOnline reads the online vectors of the persons the sampled ids
// belong to (a merged id is checked as its person: its own vector holds
// no events), each once, and returns those the store has; the others go
// to rep.Missing.
func (v *verifier) readOnline(ctx context.Context, store featurestore.Store, ppl *people, ids []string, rep *VerifyReport) ([]string, error) {
	now := time.Now()
	var persons []string
	seen := map[string]bool{}
	for _, id := range ids {
		if c := ppl.canonical(id, now); !seen[c] {
			seen[c] = true
			persons = append(persons, c)
		}
	}
	vecs, found, err := store.GetMany(ctx, v.set.Entity(), persons)
	if err != nil {
		return nil, fmt.Errorf("cannot read online vectors: %w", err)
	}
	var present []string
	for i, c := range persons {
		if found[i] {
			v.online[c] = vecs[i]
			present = append(present, c)
		} else {
			rep.Missing = append(rep.Missing, c)
		}
	}
	return present, nil
}

// replay recomputes the persons of chunk from the events of their ids up
// to each person's vector time, and compares.
func (v *verifier) replay(ctx context.Context, r *history.Reader, ppl *people, chunk []string) error {
	owners := map[string][]string{} // id -> the persons of chunk it counts for
	merged := map[string]bool{}
	var read []string
	for _, c := range chunk {
		group := ppl.group(c, v.online[c].UpdatedAt)
		merged[c] = len(group) != 1 || group[0] != c
		for _, id := range group {
			if owners[id] == nil {
				read = append(read, id)
			}
			owners[id] = append(owners[id], c)
		}
	}
	st := v.set.NewState() // one, reset for each id: see State.Reset
	err := r.EachEntity(ctx, replayFilter(v.set, history.EventFilter{Entities: read}), func(id string, evs []*event.Event) error {
		for _, c := range owners[id] {
			at := v.online[c].UpdatedAt.UnixMilli()
			st.Reset()
			for _, e := range evs {
				if e.ReceivedAt.UnixMilli() > at {
					v.unseen[c]++
				}
				if e.Timestamp.UnixMilli() <= at {
					v.set.Apply(st, e)
				}
			}
			if merged[c] {
				v.parts.add(c, st)
			} else {
				v.compare(c, st)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range chunk {
		if merged[c] {
			m, err := v.parts.merged(c)
			if err != nil {
				return err
			}
			v.compare(c, m)
		}
	}
	return nil
}

// compare checks person c's recomputed state against its online vector:
// the features, then the traits' scores over the recomputed values.
func (v *verifier) compare(c string, st *aggregate.State) {
	vec := v.online[c]
	v.vals = v.set.Values(st, vec.UpdatedAt, v.vals)
	var rfmVals map[string]any
	if v.rfm != nil {
		rfmVals = v.rfm.values(st, v.vals)
	}
	for j := range v.checks {
		ch := &v.checks[j]
		ch.Compared++
		var on, off any
		isRFM := false
		switch {
		case j < len(v.idx):
			on, off = vec.Features[v.names[v.idx[j]]], v.vals[v.idx[j]]
		case j < len(v.idx)+len(v.traits):
			tr := &v.traits[j-len(v.idx)]
			on, off = vec.Features[tr.name], tr.score(v.vals)
		default:
			on, off, isRFM = vec.Features[ch.Feature], rfmVals[ch.Feature], true
		}
		if same(on, off) {
			continue
		}
		ch.Mismatches++
		reason := "values differ: the stream applied other events, or other definitions (config changed without a replay?)"
		if isRFM {
			reason = v.rfm.reason(vec.UpdatedAt)
		}
		if unseen := v.unseen[c]; unseen > 0 {
			ch.Lagging++
			reason = fmt.Sprintf("stream lag: %d event(s) received after the vector was computed", unseen)
		}
		if len(ch.Examples) < v.examples {
			ch.Examples = append(ch.Examples, Mismatch{EntityID: c, Online: on, Offline: off, Reason: reason})
		}
	}
	v.n++
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
