package system

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/backfill"
	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/deletion"
	"github.com/pulse-rt/pulse/featurestore"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/internal/testenv"
)

// mergedPeople is shop traffic of a few people over three devices each,
// as the SDKs send it: anonymous browsing and orders on the devices,
// orders as the user, identifies that log a device in (userId,
// anonymousId, traits.email) and aliases (previousId), a third device that never logs in and is
// linked by a newsletter form's email alone, retries of earlier events
// (same messageId), event times spread over the last 36 hours and sent
// in another order. orders counts each person's distinct orders over its
// userId and the devices that end linked to it.
type mergedPeople struct {
	batches [][]map[string]any
	orders  map[string]int      // userId -> orders of all its ids
	linked  map[string]string   // device -> userId
	ids     map[string][]string // userId -> its ids (the user's own first)
	byEmail map[string]bool     // the devices linked by the email alone
	aliases int
}

func newMergedPeople(seed uint64, people, n int, now time.Time) *mergedPeople {
	rng := rand.New(rand.NewPCG(seed, 11))
	m := &mergedPeople{orders: map[string]int{}, linked: map[string]string{}, ids: map[string][]string{}, byEmail: map[string]bool{}}
	type sent struct {
		msg      map[string]any
		order    bool
		owner    string // the device, or the user
		personal string // the person whose user this is
	}
	var all []sent
	identified := map[string]bool{}
	for i := range n {
		p := rng.IntN(people)
		user := fmt.Sprintf("vp%d", p)
		dev := rng.IntN(3)
		device := fmt.Sprintf("vd%d-%d", p, dev)
		email := fmt.Sprintf("vp%d@shop.example", p)
		at := now.Add(-time.Duration(rng.Int64N(int64(36 * time.Hour))))
		msg := map[string]any{"messageId": fmt.Sprintf("vm%d-%d", seed, i), "timestamp": at.Format(time.RFC3339Nano)}
		s := sent{msg: msg, owner: device, personal: user}
		switch k := rng.IntN(20); {
		case k == 0 && len(all) > 0:
			all = append(all, all[rng.IntN(len(all))]) // a retry: the same message again
			continue
		case k < 4 && dev == 2 && identified[user]:
			// The newsletter form: the email only, which the user's
			// login already linked.
			msg["type"], msg["anonymousId"] = "identify", device
			msg["traits"] = map[string]any{"email": email}
			m.linked[device], m.byEmail[device] = user, true
		case k == 3 && dev < 2: // the backend's alias call
			msg["type"], msg["userId"], msg["previousId"] = "alias", user, device
			m.linked[device] = user
			s.owner = user
			m.aliases++
		case k < 4 && dev < 2:
			msg["type"], msg["userId"], msg["anonymousId"] = "identify", user, device
			msg["traits"] = map[string]any{"email": email, "country": []string{"DE", "FR", "NL"}[rng.IntN(3)]}
			identified[user], m.linked[device] = true, user
			s.owner = user
		case k < 9:
			msg["type"], msg["event"] = "track", "Order Completed"
			msg["properties"] = map[string]any{"revenue": float64(5 + rng.IntN(300)), "order_id": msg["messageId"]}
			msg["anonymousId"] = device
			if rng.IntN(3) == 0 {
				delete(msg, "anonymousId")
				msg["userId"], s.owner = user, user
			}
			s.order = true
		default:
			msg["type"], msg["event"] = "track", "Product Viewed"
			msg["anonymousId"] = device
			msg["properties"] = map[string]any{"product_id": fmt.Sprintf("p%d", rng.IntN(40)),
				"category": []string{"Toys", "Books", "Garden", "Kitchen"}[rng.IntN(4)]}
		}
		all = append(all, s)
	}
	seen := map[any]bool{}
	for _, s := range all {
		if s.order && !seen[s.msg["messageId"]] {
			if s.owner == s.personal || m.linked[s.owner] != "" {
				m.orders[s.personal]++
			}
		}
		seen[s.msg["messageId"]] = true
	}
	for p := range people {
		user := fmt.Sprintf("vp%d", p)
		m.ids[user] = []string{user}
		for d := range 3 {
			if device := fmt.Sprintf("vd%d-%d", p, d); m.linked[device] == user {
				m.ids[user] = append(m.ids[user], device)
			}
		}
	}
	for i := 0; i < len(all); i += 50 {
		var b []map[string]any
		for _, s := range all[i:min(i+50, len(all))] {
			b = append(b, s.msg)
		}
		m.batches = append(m.batches, b)
	}
	return m
}

// checkMergedPeopleVerify posts mergedPeople's traffic to a running
// pulse dev and checks, once the history holds it, that every person's
// online vector has the orders of all its ids, every linked device
// answers as its person, and `pulse backfill verify` (the history's
// events and identity_links through the backfill's point-in-time rule)
// agrees with the online store on every feature for every person,
// asked for by any of its ids: online and offline resolve identities the
// same way.
func checkMergedPeopleVerify(t *testing.T, cfg *config.Config, ingest, scorer string, served featurestore.Store, r *history.Reader,
	call func(method, url, key, body string) (int, string)) *mergedPeople {
	t.Helper()
	m := newMergedPeople(3, 10, 600, time.Now())
	for _, b := range m.batches {
		body, _ := json.Marshal(map[string]any{"batch": b})
		if code, out := call("POST", ingest+"/v1/batch", "dev-write-key", string(body)); code != 200 {
			t.Fatalf("batch: %d %s", code, out)
		}
	}
	var users, every []string
	for u, ids := range m.ids {
		users = append(users, u)
		every = append(every, ids...)
	}
	sort.Strings(users)
	devices := len(every) - len(users)
	if len(m.linked) < len(users) || devices < len(users) {
		t.Fatalf("the load links %d devices of %d people: too few to check merges", len(m.linked), len(users))
	}
	ctx := context.Background()
	// The stream: each person's orders, over all its ids, in its vector.
	testenv.WaitFor(t, 60*time.Second, "every person's orders of all its ids online", func() bool {
		vecs, found, err := served.GetMany(ctx, "user", users)
		if err != nil {
			return false
		}
		for i, u := range users {
			if !found[i] || vecs[i].Features["orders_lifetime"] != float64(m.orders[u]) {
				return false
			}
		}
		return true
	})
	// The history: every device's link, and verify agreeing (the history
	// writer may still be copying the last events: retried a while).
	var (
		rep     *backfill.VerifyReport
		links   uint64
		lastErr error
	)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		lastErr = r.Conn().QueryRow(ctx, fmt.Sprintf("SELECT count(DISTINCT identifier) FROM %s WHERE identifier LIKE 'anonymous_id:vd%%'",
			r.Table("identity_links"))).Scan(&links)
		if lastErr == nil && int(links) >= len(m.linked) {
			rep, lastErr = backfill.Verify(ctx, cfg, r, served, backfill.VerifyOptions{Entities: every, Examples: 5})
			if lastErr == nil && rep.Mismatches() == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			if rep != nil {
				rep.Write(&b)
			}
			t.Fatalf("after 60s: %d of %d devices' links in the history; verify: %v\n%s", links, len(m.linked), lastErr, b.String())
		}
	}
	if len(rep.Missing) != 0 {
		t.Fatalf("verify: persons missing online: %v", rep.Missing)
	}
	for _, f := range rep.Features {
		// Asked for by every id, each person is compared once: the
		// devices resolved to their persons.
		if f.Compared != len(users) {
			t.Fatalf("verify compared %s for %d persons, want %d (%d ids asked)", f.Feature, f.Compared, len(users), len(every))
		}
	}
	// A linked device answers as its person.
	for device, user := range m.linked {
		code, out := call("GET", scorer+"/v1/entities/user/"+device, "dev-read-key", "")
		var e struct {
			CanonicalID string `json:"canonical_id"`
		}
		if err := json.Unmarshal([]byte(out), &e); code != 200 || err != nil || e.CanonicalID != user {
			t.Fatalf("device %s: %d %s, want canonical_id %s", device, code, out, user)
		}
	}
	// The profile of a device linked by the email alone lists the whole
	// person: its userId, the email, the device.
	for device, user := range m.linked {
		if !m.byEmail[device] {
			continue
		}
		code, out := call("GET", scorer+"/v1/profiles/user/"+device, "dev-read-key", "")
		var prof struct {
			CanonicalID string `json:"canonical_id"`
			Identities  []struct {
				Identifier string `json:"identifier"`
			} `json:"identities"`
		}
		if err := json.Unmarshal([]byte(out), &prof); code != 200 || err != nil || prof.CanonicalID != user {
			t.Fatalf("profile of %s: %d %s, want canonical_id %s", device, code, out, user)
		}
		ids := map[string]bool{}
		for _, id := range prof.Identities {
			ids[id.Identifier] = true
		}
		for _, want := range []string{"user_id:" + user, "email:" + user + "@shop.example", "anonymous_id:" + device} {
			if !ids[want] {
				t.Fatalf("profile of %s lists %v: want %s among them", device, prof.Identities, want)
			}
		}
	}
	// And the sample verify takes by itself, over the whole history.
	all, err := backfill.Verify(ctx, cfg, r, served, backfill.VerifyOptions{Sample: 1000})
	if err != nil || all.Mismatches() != 0 || len(all.Missing) != 0 {
		var b strings.Builder
		if all != nil {
			all.Write(&b)
		}
		t.Fatalf("verify over a sample of the history: %v\n%s", err, b.String())
	}
	t.Logf("verify: %d people over %d ids (%d devices linked, %d by email only; %d aliases), every feature equal online and offline",
		len(users), len(every), devices, len(m.byEmail), m.aliases)
	return m
}

// checkDeletePerson deletes one of m's people through the profile API,
// asked for by one of its devices, as a privacy request names whatever id
// it has: every id of the person stops answering, its rows leave the
// history (events, links, segment changes), its exits reach
// pulse.segments' readers, and the other people stay, online and offline
// still agreeing.
func checkDeletePerson(t *testing.T, cfg *config.Config, ingest, scorer string, served featurestore.Store, r *history.Reader,
	call func(method, url, key, body string) (int, string), m *mergedPeople) {
	t.Helper()
	var users []string
	for u := range m.ids {
		users = append(users, u)
	}
	sort.Strings(users)
	gone := users[0]
	var device string
	for d, u := range m.linked {
		if u == gone && (device == "" || d < device) {
			device = d
		}
	}
	// The person's export (an access request) through a device id: its
	// profile and every history row of its ids, as many events as
	// ClickHouse holds for them.
	ids := m.ids[gone]
	ctx := context.Background()
	list := "'" + strings.Join(ids, "','") + "'"
	personEvents := "SELECT count() FROM " + r.Table("events") + " FINAL WHERE user_id IN (" + list + ") OR anonymous_id IN (" + list + ") OR previous_id IN (" + list + ")"
	exportOf := func() (lines []map[string]any, rows map[string]int) {
		t.Helper()
		code, out := call("GET", scorer+"/v1/exports/user/"+device, "dev-admin-key", "")
		rows = map[string]int{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); code != 200 || err != nil {
				t.Fatalf("export of %s: %d %s", device, code, out)
			}
			if m["type"] == "row" {
				rows[m["table"].(string)]++
			}
			lines = append(lines, m)
		}
		if last := lines[len(lines)-1]; last["type"] != "summary" || last["complete"] != true {
			t.Fatalf("export of %s: incomplete: %v", device, last)
		}
		return lines, rows
	}
	lines, rows := exportOf()
	var inHistory uint64
	if err := r.Conn().QueryRow(ctx, personEvents).Scan(&inHistory); err != nil {
		t.Fatal(err)
	}
	if lines[0]["canonical_id"] != gone || lines[1]["type"] != "profile" || lines[1]["canonical_id"] != gone ||
		rows["events"] == 0 || uint64(rows["events"]) != inHistory || rows["identity_links"] < len(ids) {
		t.Fatalf("export of %s: header %v, profile %v, rows %v; want %s's, with the %d events ClickHouse holds", device, lines[0], lines[1], rows, gone, inHistory)
	}

	code, out := call("DELETE", scorer+"/v1/profiles/user/"+device, "dev-read-key", "")
	if code != 403 {
		t.Fatalf("DELETE with a read key: %d %s, want 403", code, out)
	}
	code, out = call("DELETE", scorer+"/v1/profiles/user/"+device, "dev-admin-key", "")
	var d struct {
		Accepted    bool     `json:"accepted"`
		StatusURL   string   `json:"status_url"`
		Identifiers []string `json:"identifiers"`
	}
	if err := json.Unmarshal([]byte(out), &d); code != 202 || err != nil || !d.Accepted || !contains(d.Identifiers, "user_id:"+gone) || d.StatusURL == "" {
		t.Fatalf("DELETE %s: %d %s, want 202 listing user_id:%s", device, code, out, gone)
	}
	// Its status says done once the stream and the history (ClickHouse's
	// mutations included) are: then the rows are gone, with no wait.
	var st deletion.Status
	testenv.WaitFor(t, 60*time.Second, "the deletion's status to say done", func() bool {
		code, out := call("GET", scorer+d.StatusURL, "dev-admin-key", "")
		return code == 200 && json.Unmarshal([]byte(out), &st) == nil && st.State == deletion.StateDone
	})
	if st.Entities != len(ids) || st.Stream.PartsDone != len(ids) || st.History == nil || st.History.PartsDone != st.Identifiers ||
		st.Identifiers < len(ids) || st.Kind != "user_id" {
		t.Fatalf("deletion status %+v (history %+v), want %d entities done and every identifier's history", st, st.History, len(ids))
	}
	for _, q := range []string{
		"SELECT count() FROM " + r.Table("events") + " WHERE user_id IN (" + list + ") OR anonymous_id IN (" + list + ")",
		"SELECT count() FROM " + r.Table("identity_links") + " WHERE canonical_id IN (" + list + ")",
		"SELECT count() FROM " + r.Table("segment_changes") + " WHERE entity_id IN (" + list + ")",
	} {
		var n uint64
		if err := r.Conn().QueryRow(ctx, q).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%s: %d (%v) with the deletion done, want 0", q, n, err)
		}
	}
	// The online store applies a deletion right after its commit.
	testenv.WaitFor(t, 5*time.Second, "every id of the deleted person to answer 404", func() bool {
		for _, id := range ids {
			if code, _ := call("GET", scorer+"/v1/profiles/user/"+id, "dev-read-key", ""); code != 404 {
				return false
			}
		}
		return true
	})
	// Its export now: no profile, no row.
	if lines, rows := exportOf(); len(lines) != 2 || len(rows) != 0 {
		t.Fatalf("export after the deletion: %v", lines)
	}
	code, out = call("GET", scorer+"/v1/deletions?status=done", "dev-admin-key", "")
	if code != 200 || !strings.Contains(out, `"request_id":"`+st.RequestID+`"`) || strings.Contains(out, gone) {
		t.Fatalf("GET /v1/deletions?status=done: %d %s, want the deletion listed, naming no id", code, out)
	}
	var rest []string
	for _, u := range users[1:] {
		rest = append(rest, m.ids[u]...)
	}
	rep, err := backfill.Verify(ctx, cfg, r, served, backfill.VerifyOptions{Entities: rest, Examples: 5})
	if err != nil || rep.Mismatches() != 0 || len(rep.Missing) != 0 {
		var b strings.Builder
		if rep != nil {
			rep.Write(&b)
		}
		t.Fatalf("verify of the other people after the deletion: %v\n%s", err, b.String())
	}
	t.Logf("deleted %s (%d ids) through %s: gone online and from the history; %d other people unchanged", gone, len(ids), device, len(users)-1)

	// Deleted with suppression: the person's later events are dropped at
	// ingest, answered as accepted, and it stays gone.
	supp, kept := users[1], users[2]
	code, out = call("DELETE", scorer+"/v1/profiles/user/"+supp+"?suppress=true", "dev-admin-key", "")
	if code != 202 || !strings.Contains(out, `"suppressed":true`) {
		t.Fatalf("DELETE %s?suppress=true: %d %s", supp, code, out)
	}
	testenv.WaitFor(t, 30*time.Second, supp+" gone and ingest holding its ids", func() bool {
		if code, _ := call("GET", scorer+"/v1/profiles/user/"+supp, "dev-read-key", ""); code != 404 {
			return false
		}
		_, metrics := call("GET", ingest+"/metrics", "", "")
		return testenv.MetricText(metrics, "pulse_ingest_suppressed_ids") >= float64(len(m.ids[supp]))
	})
	// The scorer lists them too, with the deletion that suppressed them.
	testenv.WaitFor(t, 30*time.Second, supp+" listed as suppressed", func() bool {
		code, out := call("GET", scorer+"/v1/suppressions/"+supp, "dev-admin-key", "")
		return code == 200 && strings.Contains(out, `"request_id":"delete-`)
	})
	_, metrics := call("GET", ingest+"/metrics", "", "")
	dropped0 := testenv.MetricText(metrics, "pulse_ingest_suppressed_total")
	for _, id := range []string{supp, kept} {
		body := `{"userId":"` + id + `","event":"Order Completed","messageId":"after-` + id + `","properties":{"revenue":5}}`
		if code, out := call("POST", ingest+"/v1/track", "dev-write-key", body); code != 200 {
			t.Fatalf("track %s: %d %s", id, code, out)
		}
	}
	testenv.WaitFor(t, 30*time.Second, kept+"'s order after the suppression counted", func() bool {
		vecs, found, err := served.GetMany(ctx, "user", []string{kept})
		return err == nil && found[0] && vecs[0].Features["orders_lifetime"] == float64(m.orders[kept]+1)
	})
	if code, out := call("GET", scorer+"/v1/profiles/user/"+supp, "dev-read-key", ""); code != 404 {
		t.Fatalf("%s after its suppressed event: %d %s, want 404", supp, code, out)
	}
	_, metrics = call("GET", ingest+"/metrics", "", "")
	if d := testenv.MetricText(metrics, "pulse_ingest_suppressed_total") - dropped0; d != 1 {
		t.Fatalf("pulse_ingest_suppressed_total grew by %v, want 1", d)
	}
}
