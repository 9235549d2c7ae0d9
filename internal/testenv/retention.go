package testenv

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Retention is each of topics' retention.ms as the brokers describe it:
// the value set on the topic, or "default" when none is (the broker's,
// whatever it describes there).
func Retention(tb testing.TB, brokers []string, topics ...string) map[string]string {
	tb.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(context.Background(), topics...)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]string{}
	for _, rc := range rcs {
		for _, cf := range rc.Configs {
			if cf.Key == "retention.ms" && cf.Value != nil {
				v := *cf.Value
				if cf.Source != kmsg.ConfigSourceDynamicTopicConfig {
					v = "default"
				}
				out[rc.Name] = v
			}
		}
	}
	return out
}
