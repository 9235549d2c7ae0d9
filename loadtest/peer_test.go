package loadtest

import (
	"flag"
	"os"

	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
)

// The Pulse side's config and the peer's command line describe the same
// job, on each side's own topic, group and keys.
func TestPeerConfig(t *testing.T) {
	jar := t.TempDir() + "/peer.jar"
	o := PeerOptions{Brokers: []string{"127.0.0.1:9", "127.0.0.1:10"}, RedisAddr: "127.0.0.1:11", Jar: jar, PulseCommand: []string{"pulse", "stream"}, Run: "r1", Partitions: 8, Threads: 3}
	o.EnsureDefaults()

	cfg, err := PeerConfig(o, "/data")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(cfg.Features); got != len(PeerFeatures) {
		t.Fatalf("Pulse config has %d features, want %d", got, len(PeerFeatures))
	}
	for i, f := range cfg.Features {
		w := PeerFeatures[i]
		if f.Name != w.Name || f.Agg != w.Agg || f.Event != w.Event || f.Field != w.Field || f.Window != w.Window {
			t.Errorf("feature %d = %+v, want %+v", i, f, w)
		}
	}
	if cfg.Stream.StoreWrite != config.StoreWriteCommitted {
		t.Errorf("store_write %q by default, want committed", cfg.Stream.StoreWrite)
	}
	o.StoreWrite = config.StoreWriteEarly
	if early, err := PeerConfig(o, "/data"); err != nil {
		t.Error(err)
	} else if early.Stream.StoreWrite != config.StoreWriteEarly {
		t.Errorf("-store-write early: store_write %q", early.Stream.StoreWrite)
	}
	if cfg.Stream.CommitInterval != 0 {
		t.Errorf("commit_interval %v by default, want 0", cfg.Stream.CommitInterval)
	}
	// -store-write early takes Pulse's default for early writes; an
	// explicit -commit-interval, 0 included, stays.
	for _, c := range []struct {
		args []string
		want time.Duration
	}{
		{[]string{"-store-write", "early"}, config.EarlyCommitInterval},
		{[]string{"-store-write", "early", "-commit-interval", "0"}, 0},
		{[]string{"-commit-interval", "30ms"}, 30 * time.Millisecond},
	} {
		var po PeerOptions
		var brokers string
		fl := flag.NewFlagSet("peer", flag.ContinueOnError)
		po.Flags(fl, &brokers)
		if err := fl.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		po.Brokers, po.RedisAddr, po.Run = []string{"127.0.0.1:10"}, "127.0.0.1:11", "r1"
		po.EnsureDefaults()
		pc, err := PeerConfig(po, "/data")
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := pc.Stream.CommitInterval.D(); got != c.want {
			t.Errorf("%v: commit_interval %v, want %v", c.args, got, c.want)
		}
	}
	if cfg.Identity.Enabled == nil || *cfg.Identity.Enabled {
		t.Error("identity linking is on: the peer does none")
	}
	if cfg.Store.Backend != "redis" || cfg.Redis.Addr != "127.0.0.1:11" || cfg.Redis.KeyPrefix != "pulse-peer-r1-pulse:" {
		t.Errorf("store %q redis %q prefix %q", cfg.Store.Backend, cfg.Redis.Addr, cfg.Redis.KeyPrefix)
	}
	if cfg.Stream.Group != "pulse-peer-r1-pulse" || cfg.Kafka.Partitions != 8 || !slices.Equal(cfg.Kafka.Brokers, o.Brokers) {
		t.Errorf("group %q partitions %d brokers %v", cfg.Stream.Group, cfg.Kafka.Partitions, cfg.Kafka.Brokers)
	}
	tp := cfg.Kafka.Topics
	for _, name := range []string{tp.Events, tp.Invalid, tp.Segments, tp.Predictions, tp.State, tp.Seeds, tp.Activations, tp.Identity, tp.IdentityRequests, tp.Resolved, tp.Traits, tp.RFM} {
		if !strings.HasPrefix(name, "pulse-peer-r1-pulse.") {
			t.Errorf("topic %q is not the run's own", name)
		}
	}

	args := PeerArgs(o, "/state")
	want := []string{"java", "-Xms512m", "-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-jar", jar,
		"--bootstrap", "127.0.0.1:9,127.0.0.1:10",
		"--topic", "pulse-peer-r1-kstreams.events",
		"--application-id", "pulse-peer-r1-kstreams",
		"--state-dir", "/state",
		"--redis", "127.0.0.1:11",
		"--key-prefix", "pulse-peer-r1-kstreams:",
		"--threads", "3",
		"--allowed-lateness-ms", "604800000",
		"--feature", "orders_1h|count|Order Completed||3600000",
		"--feature", "orders_7d|count|Order Completed||604800000",
		"--feature", "revenue_30d|sum|Order Completed|properties.revenue|2592000000",
		"--feature", "max_order_30d|max|Order Completed|properties.revenue|2592000000",
		"--feature", "products_viewed_24h|distinct|Product Viewed|properties.product_id|86400000",
		"--feature", "cart_adds_24h|count|Product Added||86400000",
		"--feature", "sessions_7d|count|Session Started||604800000",
		"--feature", "last_category|last|Product Viewed|properties.category|0",
		"--feature", "last_event_at|last||timestamp|0",
		"--feature", "events_lifetime|count|||0",
	}
	if !slices.Equal(args, want) {
		t.Errorf("peer args:\n got %q\nwant %q", args, want)
	}

	// Threads default to the cores Pulse uses, at most one per partition.
	d := PeerOptions{Partitions: 1}
	d.EnsureDefaults()
	if d.Threads != 1 {
		t.Errorf("threads with 1 partition = %d, want 1", d.Threads)
	}

	// Bad options name the field.
	if err := o.Check(); err == nil || !strings.Contains(err.Error(), "jar") {
		t.Errorf("a missing jar: %v, want an error naming jar", err)
	}
	if err := os.WriteFile(jar, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := o.Check(); err != nil {
		t.Errorf("good options: %v", err)
	}
	for field, bad := range map[string]func(*PeerOptions){
		"brokers": func(o *PeerOptions) { o.Brokers = nil },
		"redis":   func(o *PeerOptions) { o.RedisAddr = "" },
		"users":   func(o *PeerOptions) { o.Users = -1 },
		"batch":   func(o *PeerOptions) { o.Batch = -1 },
		"pulse":   func(o *PeerOptions) { o.PulseCommand = nil },
	} {
		b := o
		bad(&b)
		if err := b.Check(); err == nil || !strings.HasPrefix(err.Error(), field) {
			t.Errorf("bad %s: %v, want an error naming it", field, err)
		}
	}
}
