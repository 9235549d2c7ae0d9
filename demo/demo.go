// Package demo generates realistic e-commerce traffic for `pulse dev --demo`,
// so a newcomer opening the dashboard sees segments move within seconds.
//
// It sits in front of the flow, where an app would: it posts Segment-spec
// batches to the ingest API with a write key, so the events take the real
// path (ingest -> Kafka -> stream -> segments -> scorer). Users are drawn
// from a Zipf distribution (a few heavy shoppers, a long tail), shop in
// sessions ("Session Started"), view products ("Product Viewed" with
// product_id and category), add them to a cart ("Product Added") and
// sometimes order ("Order Completed" with a lognormal revenue); a user's
// first session identifies them with traits.country. The event names are
// those of examples/ecommerce/pulse.yaml.
package demo

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	json "github.com/goccy/go-json"
)

// Event is one Segment-spec message as posted in a batch.
type Event map[string]any

// Generator makes the traffic. The same seed gives the same events for
// the same sequence of times. Not safe for concurrent use.
type Generator struct {
	seed  uint64
	rng   *rand.Rand
	zipf  *rand.Zipf
	users []*shopper
	n     uint64
}

type shopper struct {
	id    string
	known bool // identified already
	// browseFirst: the shopper browses anonymously (anonymousId
	// "anon-<id>") until they add to the cart, when they log in: an
	// identify links the device to the user (docs/identity.md).
	browseFirst bool
	country     string
	lastSeen    time.Time
	busyUntil   time.Time // not picked again before
	viewed      []product // this session
	cart        []product
	spendFactor float64 // heavy users spend more
}

type product struct {
	ID       string
	Name     string
	Category string
	Price    float64
}

var (
	categories = []string{"Shoes", "Electronics", "Books", "Home", "Beauty", "Toys", "Sports", "Garden"}
	adjectives = []string{"Classic", "Ultra", "Eco", "Pro", "Mini", "Deluxe", "Smart", "Vintage", "Urban", "Cozy"}
	nouns      = map[string][]string{
		"Shoes":       {"Runner", "Sneaker", "Boot", "Sandal", "Loafer"},
		"Electronics": {"Headphones", "Speaker", "Charger", "Keyboard", "Camera"},
		"Books":       {"Cookbook", "Novel", "Atlas", "Journal", "Biography"},
		"Home":        {"Lamp", "Blanket", "Mug", "Vase", "Candle"},
		"Beauty":      {"Serum", "Lotion", "Palette", "Perfume", "Brush"},
		"Toys":        {"Puzzle", "Robot", "Kite", "Blocks", "Plush"},
		"Sports":      {"Yoga Mat", "Bottle", "Racket", "Ball", "Backpack"},
		"Garden":      {"Planter", "Hose", "Shears", "Seeds", "Gloves"},
	}
	countries = []string{"US", "US", "US", "GB", "DE", "FR", "CA", "NL", "ES", "BR", "IN", "JP", "AU"}
	pages     = []string{"Home", "Deals", "Search", "Account", "Help"}
	catalog   = makeCatalog()
)

// makeCatalog is a fixed catalogue of 240 products (not seeded: product
// ids stay the same across runs, as a shop's would).
func makeCatalog() []product {
	r := rand.New(rand.NewPCG(7, 7))
	var out []product
	for i := range 240 {
		cat := categories[i%len(categories)]
		name := adjectives[r.IntN(len(adjectives))] + " " + nouns[cat][r.IntN(len(nouns[cat]))]
		price := math.Round(math.Exp(3.3+0.8*r.NormFloat64())*100) / 100
		out = append(out, product{ID: fmt.Sprintf("p%04d", 1001+i), Name: name, Category: cat, Price: max(2.99, price)})
	}
	return out
}

// NewGenerator makes traffic for users shoppers (default 10000).
func NewGenerator(seed uint64, users int) *Generator {
	if users <= 0 {
		users = 10000
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := &Generator{seed: seed, rng: rng, zipf: rand.NewZipf(rng, 1.3, 3, uint64(users-1))}
	for i := range users {
		// Spread heavy users over the id space, not just ids 1, 2, 3.
		id := 1 + (i*7919)%users
		g.users = append(g.users, &shopper{
			id:          strconv.Itoa(id + 100),
			country:     countries[rng.IntN(len(countries))],
			spendFactor: 1 + 2/math.Sqrt(float64(i+1)),
			browseFirst: i%2 == 1,
		})
	}
	return g
}

// Next returns the events of one shopper's next step at now: usually one
// event, two when a session starts, three for a new user.
func (g *Generator) Next(now time.Time) []Event {
	// Heavy users come back often, but one person does not act twice a
	// second, nor shop again right after an order.
	u := g.users[g.zipf.Uint64()]
	for try := 0; try < 8 && now.Before(u.busyUntil); try++ {
		u = g.users[g.zipf.Uint64()]
	}
	var out []Event
	if u.lastSeen.IsZero() || now.Sub(u.lastSeen) > 30*time.Minute {
		if !u.known && !u.browseFirst {
			out = append(out, g.identify(now, u))
		}
		u.viewed, u.cart = nil, nil
		out = append(out, g.track(now, u, "Session Started", map[string]any{"referrer": []string{"google", "direct", "email", "instagram"}[g.rng.IntN(4)]}))
	}
	u.lastSeen = now
	u.busyUntil = now.Add(time.Second + time.Duration(g.rng.Int64N(int64(3*time.Second))))
	p := g.rng.Float64()
	switch {
	case len(u.cart) > 0 && p < 0.12*math.Sqrt(u.spendFactor):
		out = append(out, g.order(now, u))
		// Gone for a while after buying: a new session when they are back.
		u.busyUntil = now.Add(time.Minute + time.Duration(g.rng.Int64N(int64(3*time.Minute))))
		u.lastSeen = now.Add(-31 * time.Minute)
	case len(u.viewed) > 0 && p < 0.40:
		if !u.known { // logs in to check out
			out = append(out, g.identify(now, u))
		}
		item := u.viewed[g.rng.IntN(len(u.viewed))]
		u.cart = append(u.cart, item)
		out = append(out, g.track(now, u, "Product Added", productProps(item, 1)))
	case p < 0.90:
		// Shoppers browse within a favourite category most of the time.
		item := catalog[g.rng.IntN(len(catalog))]
		if len(u.viewed) > 0 && g.rng.Float64() < 0.6 {
			cat := u.viewed[len(u.viewed)-1].Category
			for item.Category != cat {
				item = catalog[g.rng.IntN(len(catalog))]
			}
		}
		u.viewed = append(u.viewed, item)
		out = append(out, g.track(now, u, "Product Viewed", productProps(item, 0)))
	default:
		out = append(out, g.msg(now, u, Event{"type": "page", "name": pages[g.rng.IntN(len(pages))]}))
	}
	return out
}

func (g *Generator) order(now time.Time, u *shopper) Event {
	var products []map[string]any
	revenue := 0.0
	for _, item := range u.cart {
		qty := 1 + g.rng.IntN(2)
		products = append(products, productProps(item, qty))
		revenue += item.Price * float64(qty)
	}
	// Lognormal basket noise (shipping, upsells, big gifts), more for heavy users.
	revenue *= math.Exp(0.5*g.rng.NormFloat64()) * u.spendFactor
	revenue = math.Round(revenue*100) / 100
	u.cart = nil
	g.n++
	return g.track(now, u, "Order Completed", map[string]any{
		"order_id": fmt.Sprintf("o-%x-%d", g.seed, g.n), "revenue": revenue, "currency": "USD", "products": products,
	})
}

func productProps(p product, qty int) map[string]any {
	m := map[string]any{"product_id": p.ID, "sku": strings.ToUpper(p.ID), "name": p.Name, "category": p.Category, "price": p.Price}
	if qty > 0 {
		m["quantity"] = qty
	}
	return m
}

// identify logs u in: with the anonymousId of a shopper who browsed
// first, which links the two.
func (g *Generator) identify(now time.Time, u *shopper) Event {
	e := g.msg(now, u, Event{"type": "identify", "traits": map[string]any{
		"country": u.country, "plan": []string{"free", "free", "plus"}[g.rng.IntN(3)],
	}})
	u.known = true
	if u.browseFirst {
		e["userId"], e["anonymousId"] = u.id, "anon-"+u.id
	}
	return e
}

func (g *Generator) track(now time.Time, u *shopper, name string, props map[string]any) Event {
	return g.msg(now, u, Event{"type": "track", "event": name, "properties": props})
}

func (g *Generator) msg(now time.Time, u *shopper, e Event) Event {
	g.n++
	if u.known || !u.browseFirst {
		e["userId"] = u.id
	} else {
		e["anonymousId"] = "anon-" + u.id
	}
	e["messageId"] = fmt.Sprintf("demo-%x-%d", g.seed, g.n)
	e["timestamp"] = now.UTC().Format(time.RFC3339Nano)
	e["context"] = map[string]any{"library": map[string]any{"name": "pulse-demo", "version": "1"}}
	return e
}

// Options configure Run.
type Options struct {
	// URL is ingest's base URL, e.g. http://127.0.0.1:8080.
	URL string
	// WriteKey authenticates the batches.
	WriteKey string
	// Rate is events per second, overriding the default 30.
	Rate float64
	// Users is the number of shoppers, overriding the default 10000.
	Users int
	// Seed fixes the traffic; 0 takes one from the clock, so message ids
	// differ from a previous run's (the stream would drop repeats).
	Seed uint64
	// Client overrides a client with a 10s timeout.
	Client *http.Client
	// Log overrides slog.Default().
	Log *slog.Logger
}

// Run posts traffic to ingest until ctx ends. Ingest being down is logged
// and retried, never fatal.
func Run(ctx context.Context, o Options) error {
	if o.Rate <= 0 {
		o.Rate = 30
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	log := o.Log.With("component", "demo")
	g := NewGenerator(o.Seed, o.Users)
	const tick = 250 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	log.Info("demo traffic on", "rate", o.Rate, "users", len(g.users), "ingest", o.URL)
	owed, failures := 0.0, 0
	var batch []Event
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// Vary the pace a little, like real traffic.
		owed += o.Rate * tick.Seconds() * (0.6 + 0.8*g.rng.Float64())
		now := time.Now()
		for owed >= 1 {
			evs := g.Next(now)
			batch = append(batch, evs...)
			owed -= float64(len(evs))
		}
		if len(batch) == 0 {
			continue
		}
		if err := post(ctx, o, batch); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			if failures == 1 || failures%40 == 0 {
				log.Warn("demo cannot post to ingest; retrying", "err", err, "failures", failures)
			}
			if len(batch) > 2000 {
				batch = batch[len(batch)-2000:] // ingest down for long: keep it recent
			}
			continue
		}
		failures = 0
		batch = batch[:0]
	}
}

func post(ctx context.Context, o Options, batch []Event) error {
	body, err := json.Marshal(map[string]any{"batch": batch, "sentAt": time.Now().UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(o.URL, "/")+"/v1/batch", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.SetBasicAuth(o.WriteKey, "")
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("ingest answered %d: %s", resp.StatusCode, e.Error)
	}
	return nil
}
