package scorer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/internal/testenv"
	"github.com/pulse-rt/pulse/kafka"
	"github.com/pulse-rt/pulse/scorer"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// fakeEvents is a history that records which ids a profile asked for.
type fakeEvents struct {
	mu  sync.Mutex
	ids []string
}

func (f *fakeEvents) RecentEvents(_ context.Context, ids []string, n int) ([]event.Raw, error) {
	f.mu.Lock()
	f.ids = slices.Clone(ids)
	f.mu.Unlock()
	at := time.Date(2025, 3, 1, 11, 0, 0, 0, time.UTC)
	return []event.Raw{{MessageID: "m2", Type: event.Track, Event: "Order Completed", UserID: "U", Timestamp: at, Properties: json.RawMessage(`{"revenue":5}`)},
		{MessageID: "m1", Type: event.Page, AnonymousID: "A", Timestamp: at.Add(-time.Hour)}}[:min(n, 2)], nil
}

func (f *fakeEvents) LatestTraits(context.Context, []string) (map[string]any, error) {
	return map[string]any{"plan": "pro"}, nil
}

// TestProfileListsIdentities: links read from a real Kafka broker's
// identity topic list a person's identifiers in GET /v1/profiles, asked by
// any of its ids (the store's pointer says which person), with traits and
// the events of all its ids; a later merge of the person into another
// moves all of them; an unlinked id is itself.
func TestProfileListsIdentities(t *testing.T) {
	brokers := testenv.Kafka(t)
	cfg := newConfig(t, testConfig)
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.Topics.Identity = testenv.Topic(t, "identity")
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 2, 1, nil, cfg.Kafka.Topics.Identity); err != nil {
		t.Fatal(err)
	}
	t1 := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	link := func(id, canonical, prev string, at time.Time, msg string) {
		t.Helper()
		b, err := identity.EncodeLink(identity.Link{Identifier: id, CanonicalID: canonical, Previous: prev, At: at, MessageID: msg, Kind: "identify"})
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: cfg.Kafka.Topics.Identity, Key: []byte(id), Value: b}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	// The store as the stream leaves it: A merged into U (its vector
	// points at U), B its own person.
	st := newMemStore()
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	none := map[string]any{"orders_30d": 0.0}
	seed(t, st, map[string]map[string]any{"U": buyer(), "B": none}, nil)
	if err := st.Write(context.Background(), []featurestore.Update{{Vector: featurestore.Vector{Entity: "user", ID: "A", Features: none, UpdatedAt: at, CanonicalID: "U"}}}); err != nil {
		t.Fatal(err)
	}
	ids := scorer.NewIdentities(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ids.Run(ctx) }()
	defer func() { cancel(); <-done }()
	events := &fakeEvents{}
	h := start(t, cfg, st, scorer.WithIdentities(ids), scorer.WithHistory(events))
	profile := func(id, query string) (int, string, scorer.Profile) {
		t.Helper()
		code, body := h.do("GET", "/v1/profiles/user/"+id+query, "read-key", "")
		var p scorer.Profile
		if code == 200 && json.Unmarshal([]byte(body), &p) != nil {
			t.Fatalf("profile of %s: %s", id, body)
		}
		return code, body, p
	}

	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: cfg.Kafka.Topics.Identity, Key: []byte("__linker/fence"), Value: []byte("00ff")}).FirstErr(); err != nil {
		t.Fatal(err) // the linker's own record: not a link
	}
	link("user_id:U", "U", "", t1, "i1")
	link("anonymous_id:A", "U", "", t1, "i1")
	link("email:a@example.com", "U", "", t1.Add(time.Minute), "i2")
	testenv.WaitFor(t, 10*time.Second, "U's three identifiers", func() bool {
		_, _, p := profile("U", "?events=0")
		return len(p.Identities) == 3
	})
	if _, body, p := profile("B", ""); p.CanonicalID != "B" || len(p.Identities) != 0 {
		t.Errorf("unlinked B: %s", body)
	}

	code, body, p := profile("A", "?events=2")
	if code != 200 {
		t.Fatalf("profile: %d %s", code, body)
	}
	var got []string
	for _, l := range p.Identities {
		got = append(got, l.Identifier+"@"+l.MessageID)
	}
	if p.CanonicalID != "U" || p.ID != "A" || !slices.Equal(got, []string{"anonymous_id:A@i1", "user_id:U@i1", "email:a@example.com@i2"}) ||
		p.Traits["plan"] != "pro" || p.TraitsFrom != "history" || len(p.Events) != 2 || p.Events[0].MessageID != "m2" || p.Features["orders_30d"] != 3.0 || p.HistoryError != "" {
		t.Errorf("profile of A: %s", body)
	}
	events.mu.Lock()
	asked := slices.Sorted(slices.Values(events.ids))
	events.mu.Unlock()
	if !slices.Equal(asked, []string{"A", "U"}) {
		t.Errorf("profile read the events of %v, want A and U (not the email)", asked)
	}

	// U (and with it A) merged into V.
	if err := st.Write(context.Background(), []featurestore.Update{
		{Vector: featurestore.Vector{Entity: "user", ID: "V", Features: buyer(), UpdatedAt: at}},
		{Vector: featurestore.Vector{Entity: "user", ID: "U", Features: none, UpdatedAt: at, CanonicalID: "V"}},
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"user_id:U", "anonymous_id:A", "email:a@example.com"} {
		link(id, "V", "U", t1.Add(time.Hour), "al1")
	}
	link("user_id:V", "V", "", t1.Add(time.Hour), "al1")
	testenv.WaitFor(t, 10*time.Second, "V's four identifiers", func() bool {
		_, _, p = profile("A", "?events=0")
		return len(p.Identities) == 4
	})
	if p.CanonicalID != "V" || len(p.Events) != 0 {
		t.Errorf("profile of A after the second merge, events=0: %+v", p)
	}
	if _, _, pu := profile("U", ""); pu.CanonicalID != "V" || len(pu.Identities) != 4 {
		t.Errorf("profile of U after the second merge: %+v", pu)
	}
	if c, ok := ids.CanonicalOf("email:a@example.com"); c != "V" || !ok {
		t.Errorf("CanonicalOf(the email) = %q %v, want V", c, ok)
	}
	if c, ok := ids.CanonicalOf("user_id:nobody"); ok {
		t.Errorf("CanonicalOf(an identifier never linked) = %q", c)
	}
	// A deletion's tombstone: the identifier is linked to none.
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: cfg.Kafka.Topics.Identity, Key: []byte("email:a@example.com")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the email's tombstone", func() bool {
		_, ok := ids.CanonicalOf("email:a@example.com")
		return !ok
	})
	if _, _, pu := profile("U", ""); len(pu.Identities) != 3 {
		t.Errorf("profile of U after the email's tombstone: %+v", pu.Identities)
	}

	for _, q := range []string{"abc", "-1", "1001"} {
		code, body = h.do("GET", "/v1/profiles/user/V?events="+q, "read-key", "")
		if code != 400 || !strings.Contains(body, `"events: `) {
			t.Errorf("?events=%s: %d %s, want 400 naming events", q, code, body)
		}
	}
	if code, body = h.do("GET", "/v1/profiles/user/V", "", ""); code != 401 {
		t.Errorf("profile without a key: %d %s", code, body)
	}
}

// TestProfileWithoutHistory: no history configured says so rather than
// answering empty lists silently.
func TestProfileWithoutHistory(t *testing.T) {
	st := newMemStore()
	seed(t, st, map[string]map[string]any{"612": buyer()}, nil)
	h := start(t, newConfig(t, testConfig), st)
	code, body := h.do("GET", "/v1/profiles/user/612", "read-key", "")
	var p scorer.Profile
	if code != 200 || json.Unmarshal([]byte(body), &p) != nil || p.CanonicalID != "612" || !strings.Contains(p.HistoryError, "clickhouse.addr") ||
		p.Identities == nil || p.Events == nil || p.Features["orders_30d"] != 3.0 {
		t.Errorf("profile: %d %s", code, body)
	}
	if code, body := h.do("GET", "/v1/profiles/user/nobody", "read-key", ""); code != 404 {
		t.Errorf("unknown id: %d %s", code, body)
	}
}

// TestProfileTraitsOnline: with a last_by_key feature over traits the
// profile's traits are that feature's value, the person's traits kept
// online (merged across its ids by the stream), and the history is not
// asked for them; it still answers the events. Without a history the
// traits are there all the same.
func TestProfileTraitsOnline(t *testing.T) {
	yaml := strings.Replace(testConfig, "segments:\n", "  - {name: profile_traits, agg: last_by_key, type: identify, field: traits}\nsegments:\n", 1)
	cfg := newConfig(t, yaml)
	if got := cfg.ProfileTraits("user"); got != "profile_traits" {
		t.Fatalf("ProfileTraits = %q", got)
	}
	st := newMemStore()
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	traits := map[string]any{"plan": "team", "email": "u@example.com"}
	if err := st.Write(context.Background(), []featurestore.Update{{Vector: featurestore.Vector{Entity: "user", ID: "U",
		Features: map[string]any{"orders_30d": 1.0, "profile_traits": traits}, UpdatedAt: at}}}); err != nil {
		t.Fatal(err)
	}
	for _, history := range []bool{true, false} {
		var opts []scorer.Option
		if history {
			opts = append(opts, scorer.WithHistory(&fakeEvents{})) // its traits say plan: pro
		}
		h := start(t, cfg, st, opts...)
		code, body := h.do("GET", "/v1/profiles/user/U", "read-key", "")
		var p scorer.Profile
		if code != 200 || json.Unmarshal([]byte(body), &p) != nil || p.Traits["plan"] != "team" || p.Traits["email"] != "u@example.com" ||
			p.TraitsFrom != "feature:profile_traits" || history && len(p.Events) != 2 || !history && p.HistoryError == "" {
			t.Errorf("history %v: profile: %d %s", history, code, body)
		}
	}
}

// TestIdentitiesCopyStartsFromItsTail: on a real broker, a scorer's
// identity copy started again on its data dir reads only the links
// written since (a deleted identifier stays gone, the others answer); a
// second scorer on the same data dir, which cannot open the copy there,
// keeps one in memory and reads the whole topic.
func TestIdentitiesCopyStartsFromItsTail(t *testing.T) {
	cfg := newConfig(t, testConfig)
	cfg.Kafka.Brokers = testenv.Kafka(t)
	cfg.Kafka.Topics.Identity = testenv.Topic(t, "identity")
	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	compact := "compact"
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 2, 1, map[string]*string{"cleanup.policy": &compact}, cfg.Kafka.Topics.Identity); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	write := func(id, canonical string) {
		t.Helper()
		r := &kgo.Record{Topic: cfg.Kafka.Topics.Identity, Key: []byte(id)}
		if canonical != "" {
			if r.Value, err = identity.EncodeLink(identity.Link{Identifier: id, CanonicalID: canonical, At: at, MessageID: "m", Kind: "identify"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	run := func(ids *scorer.Identities) (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ids.Run(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	for i := range 20 {
		write(fmt.Sprint("anonymous_id:a", i), fmt.Sprint("u", i/2))
	}
	write("anonymous_id:a3", "") // a tombstone: forgotten

	first := scorer.NewIdentities(cfg, nil)
	stop := run(first)
	testenv.WaitFor(t, 10*time.Second, "the first copy read every link", func() bool {
		_, ok := first.CanonicalOf("anonymous_id:a19")
		return ok && scorer.LinksRead(first) == 21
	})
	stop()

	write("anonymous_id:a20", "u10")
	write("anonymous_id:a21", "u10")
	again := scorer.NewIdentities(cfg, nil)
	stop = run(again)
	defer stop()
	testenv.WaitFor(t, 10*time.Second, "the copy started again read the new links", func() bool {
		_, ok := again.CanonicalOf("anonymous_id:a21")
		return ok
	})
	if n := scorer.LinksRead(again); n != 2 {
		t.Errorf("the copy started again on its data dir read %d links, want the 2 written since", n)
	}
	if c, ok := again.CanonicalOf("anonymous_id:a0"); !ok || c != "u0" {
		t.Errorf("a0 after the restart: %q %v, want u0", c, ok)
	}
	if _, ok := again.CanonicalOf("anonymous_id:a3"); ok {
		t.Error("a3, deleted, came back after the restart")
	}
	if ls := again.Links("u10"); len(ls) != 2 {
		t.Errorf("u10's links after the restart: %+v", ls)
	}

	other := scorer.NewIdentities(cfg, nil) // the same data dir, held by again
	stopOther := run(other)
	defer stopOther()
	testenv.WaitFor(t, 10*time.Second, "a copy in memory beside it", func() bool {
		_, ok := other.CanonicalOf("anonymous_id:a21")
		return ok && scorer.LinksRead(other) == 23
	})
	if _, ok := other.CanonicalOf("anonymous_id:a3"); ok {
		t.Error("a3, deleted, in the copy in memory")
	}
}

// TestIdentitiesWaitForTheTopic: a scorer started before the identity
// topic exists (Kafka's topics made after it) tries again until it does,
// and then reads its links.
func TestIdentitiesWaitForTheTopic(t *testing.T) {
	cfg := newConfig(t, testConfig)
	cfg.Kafka.Brokers = testenv.Kafka(t)
	cfg.Kafka.Topics.Identity = testenv.Topic(t, "identity")
	ids := scorer.NewIdentities(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ids.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(1500 * time.Millisecond) // a first try fails: no topic

	cl, err := kafka.NewClient(cfg.Kafka, kafka.ProducerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, nil, cfg.Kafka.Topics.Identity); err != nil {
		t.Fatal(err)
	}
	v, err := identity.EncodeLink(identity.Link{Identifier: "anonymous_id:a", CanonicalID: "u", At: time.Now(), MessageID: "m", Kind: "identify"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: cfg.Kafka.Topics.Identity, Key: []byte("anonymous_id:a"), Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "the link, once the topic is there", func() bool {
		c, ok := ids.CanonicalOf("anonymous_id:a")
		return ok && c == "u"
	})
}

// TestIdentitiesBuildPastAbortedTail: a copy built from nothing on a real
// broker whose identity topic ends with an aborted transaction (a linker
// that failed), which read_committed never delivers, finishes its build
// and lists the person's identifiers.
func TestIdentitiesBuildPastAbortedTail(t *testing.T) {
	cfg := newConfig(t, testConfig)
	cfg.Kafka.Brokers = testenv.Kafka(t)
	cfg.Kafka.Topics.Identity = testenv.Topic(t, "identity")
	cl, err := kafka.NewClient(cfg.Kafka, append(kafka.ProducerOpts(), kgo.TransactionalID(cfg.Kafka.Topics.Identity+".txn"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, nil, cfg.Kafka.Topics.Identity); err != nil {
		t.Fatal(err)
	}
	txn := func(commit kgo.TransactionEndTry, ids ...string) {
		t.Helper()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			v, err := identity.EncodeLink(identity.Link{Identifier: id, CanonicalID: "u", At: time.Now(), MessageID: "m", Kind: "identify"})
			if err != nil {
				t.Fatal(err)
			}
			if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: cfg.Kafka.Topics.Identity, Key: []byte(id), Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.EndTransaction(context.Background(), commit); err != nil {
			t.Fatal(err)
		}
	}
	txn(kgo.TryCommit, "user_id:u", "anonymous_id:a")
	txn(kgo.TryAbort, "anonymous_id:b", "anonymous_id:c", "anonymous_id:d")

	ids := scorer.NewIdentities(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ids.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testenv.WaitFor(t, 15*time.Second, "u's identifiers listed", func() bool {
		return len(ids.Links("u")) == 2 && scorer.IdentitiesReady(ids)
	})
	if _, ok := ids.CanonicalOf("anonymous_id:b"); ok {
		t.Error("an aborted link is in the copy")
	}
}
