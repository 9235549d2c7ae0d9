package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/identity"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadLinks returns the committed links of every partition in log order
// and skips the linker's own records and aborted transactions.
func TestReadLinks(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "ids"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := config.Kafka{Brokers: c.ListenAddrs(), Topics: config.Topics{Identity: "ids"}}
	ctx := context.Background()
	if links, err := ReadLinks(ctx, cfg, time.Second); err != nil || len(links) != 0 {
		t.Fatalf("empty topic: %v %v", links, err)
	}
	prod, err := NewClient(cfg, kgo.TransactionalID("t"), kgo.DefaultProduceTopic("ids"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	txn := func(commit bool, links ...identity.Link) {
		t.Helper()
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			v, _ := identity.EncodeLink(l)
			if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte(l.Identifier), Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte("__linker/offset"), Value: []byte("7")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := prod.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	at := time.UnixMilli(1000).UTC()
	txn(true, identity.Link{Identifier: "anonymous_id:A", CanonicalID: "U", At: at}, identity.Link{Identifier: "user_id:U", CanonicalID: "U", At: at})
	txn(false, identity.Link{Identifier: "anonymous_id:B", CanonicalID: "U", At: at})
	txn(true, identity.Link{Identifier: "anonymous_id:A", CanonicalID: "V", Previous: "U", At: at})
	links, err := ReadLinks(ctx, cfg, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var last = map[string]string{}
	for _, l := range links {
		last[l.Identifier] = l.CanonicalID
	}
	if len(links) != 3 || last["anonymous_id:A"] != "V" || last["user_id:U"] != "U" || last["anonymous_id:B"] != "" {
		t.Fatalf("links %+v", links)
	}
}
