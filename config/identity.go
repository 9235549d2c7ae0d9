package config

import (
	"fmt"
	"slices"
	"strings"
)

// Identity configures identity resolution (docs/identity.md): which
// identifiers link events of one person into one profile, and the guards
// against merging people who are not one.
type Identity struct {
	// Enabled turns resolution on. Default true; false keeps features per
	// identifier (userId, else anonymousId) with no linking at all.
	Enabled *bool `yaml:"enabled"`
	// TraitIdentifiers are the event paths whose string values identify a
	// person besides userId and anonymousId, e.g. traits.email. The
	// identifier's kind is the path's last element ("email"); values are
	// trimmed and lowercased. Default [traits.email].
	TraitIdentifiers []string `yaml:"trait_identifiers"`
	// BlockedValues never link, compared case-insensitively after trimming
	// spaces. Setting it replaces the default list (DefaultBlockedValues);
	// the empty value is always blocked.
	BlockedValues []string `yaml:"blocked_values"`
	// MaxAnonymousIDs caps the anonymous ids of one profile: a link past it
	// is refused (the event still counts for its profile). Default 100.
	MaxAnonymousIDs int `yaml:"max_anonymous_ids"`
	// MaxIdentifiers caps the identifiers of any kind of one profile.
	// Default 1000.
	MaxIdentifiers int `yaml:"max_identifiers"`
	// MergeKnownUsers lets an alias merge two different userIds. Default
	// false: a link between two known users is refused.
	MergeKnownUsers bool `yaml:"merge_known_users"`
}

// DefaultBlockedValues are the identifier values that never link unless
// identity.blocked_values says otherwise: what broken clients send.
var DefaultBlockedValues = []string{
	"", "null", "undefined", "0", "-1", "anonymous", "none", "nan", "[object object]",
	"nil", "unknown", "n/a", "00000000-0000-0000-0000-000000000000",
}

// On reports whether identity resolution is enabled.
func (i *Identity) On() bool { return i.Enabled == nil || *i.Enabled }

func (i *Identity) applyDefaults() {
	if i.Enabled == nil {
		t := true
		i.Enabled = &t
	}
	if i.TraitIdentifiers == nil {
		i.TraitIdentifiers = []string{"traits.email"}
	}
	if i.BlockedValues == nil {
		i.BlockedValues = slices.Clone(DefaultBlockedValues)
	}
	if i.MaxAnonymousIDs == 0 {
		i.MaxAnonymousIDs = 100
	}
	if i.MaxIdentifiers == 0 {
		i.MaxIdentifiers = 1000
	}
}

// TraitKind is the identifier kind of a trait path: its last element.
func TraitKind(path string) string { return path[strings.LastIndexByte(path, '.')+1:] }

// identityChecks is the identity block's table of rules.
var identityChecks = []check{
	{"identity.trait_identifiers", func(c *Config) string {
		kinds := map[string]bool{}
		for _, p := range c.Identity.TraitIdentifiers {
			head, rest, _ := strings.Cut(p, ".")
			if rest == "" || (head != "traits" && head != "properties" && head != "context") {
				return fmt.Sprintf("%q must be a path under traits, properties or context, e.g. traits.email", p)
			}
			k := TraitKind(p)
			if !nameRE.MatchString(k) {
				return fmt.Sprintf("%q must end in an identifier (letters, digits, _)", p)
			}
			if k == "user_id" || k == "anonymous_id" {
				return fmt.Sprintf("%q: the kind %q is reserved for userId and anonymousId", p, k)
			}
			if kinds[k] {
				return fmt.Sprintf("two paths end in %q: each kind once", k)
			}
			kinds[k] = true
		}
		return ""
	}},
	{"identity.max_anonymous_ids", func(c *Config) string { return outside(c.Identity.MaxAnonymousIDs, 1, 1_000_000) }},
	{"identity.max_identifiers", func(c *Config) string {
		if c.Identity.MaxIdentifiers < c.Identity.MaxAnonymousIDs {
			return fmt.Sprintf("must be at least max_anonymous_ids (%d), got %d", c.Identity.MaxAnonymousIDs, c.Identity.MaxIdentifiers)
		}
		return outside(c.Identity.MaxIdentifiers, 2, 1_000_000)
	}},
}
