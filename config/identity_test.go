package config

import (
	"strings"
	"testing"
)

func TestIdentityDefaults(t *testing.T) {
	c, err := Parse([]byte("features: []\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	id := c.Identity
	if !id.On() || id.MaxAnonymousIDs != 100 || id.MaxIdentifiers != 1000 || id.MergeKnownUsers {
		t.Fatalf("defaults: %+v", id)
	}
	if len(id.TraitIdentifiers) != 1 || id.TraitIdentifiers[0] != "traits.email" {
		t.Fatalf("trait identifiers %v", id.TraitIdentifiers)
	}
	for _, v := range []string{"", "null", "undefined", "0", "-1", "anonymous", "none", "nan", "[object object]"} {
		if !contains(id.BlockedValues, v) {
			t.Errorf("default blocked values lack %q", v)
		}
	}
	if tp := c.Kafka.Topics; tp.Identity != "pulse.identity" || tp.IdentityRequests != "pulse.identity.requests" || tp.Resolved != "pulse.events.resolved" {
		t.Fatalf("identity topics %+v", tp)
	}
	c, err = Parse([]byte("kafka:\n  topics: {events: shop-a.events}\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if tp := c.Kafka.Topics; tp.Identity != "shop-a.identity" || tp.IdentityRequests != "shop-a.identity.requests" || tp.Resolved != "shop-a.events.resolved" {
		t.Fatalf("identity topics follow the events topic: %+v", tp)
	}
	c, err = Parse([]byte("identity:\n  enabled: false\n  trait_identifiers: []\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity.On() || len(c.Identity.TraitIdentifiers) != 0 {
		t.Fatalf("off: %+v", c.Identity)
	}
}

func TestIdentityProblems(t *testing.T) {
	f := func(src, want string) {
		t.Helper()
		_, err := Parse([]byte(src), "p.yaml")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: got %v, want %q", src, err, want)
		}
	}
	f("identity:\n  trait_identifiers: [email]\n", "identity.trait_identifiers: \"email\" must be a path under traits")
	f("identity:\n  trait_identifiers: [traits.user_id]\n", "reserved")
	f("identity:\n  trait_identifiers: [traits.email, context.traits.email]\n", "two paths end in \"email\"")
	f("identity:\n  trait_identifiers: [traits.e-mail]\n", "must end in an identifier")
	f("identity:\n  max_anonymous_ids: -3\n", "identity.max_anonymous_ids: must be between 1 and 1000000")
	f("identity:\n  max_anonymous_ids: 50\n  max_identifiers: 10\n", "identity.max_identifiers: must be at least max_anonymous_ids (50)")
	f("identity:\n  merge_known: true\n", "identity.merge_known: unknown setting (did you mean merge_known_users?)")
}
