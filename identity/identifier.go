package identity

import (
	"fmt"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/event"
)

// The identifier kinds of every event; trait identifiers have their own
// (config.TraitKind of their path, "email" for traits.email).
const (
	KindUser      = "user_id"
	KindAnonymous = "anonymous_id"
	// KindPrevious is an alias's previousId, which may be a userId or an
	// anonymousId: Graph.Apply reads it as the user_id when that is in a
	// profile, else as an anonymous_id.
	KindPrevious = "previous_id"
)

// Identifier is one typed id of a person: "user_id:U", "anonymous_id:A",
// "email:e@x.com".
type Identifier struct {
	Kind  string
	Value string
}

// String is "kind:value", the form of Link.Identifier and Store keys.
func (i Identifier) String() string { return i.Kind + ":" + i.Value }

// Entity reports whether the identifier is an entity id of the stream
// (userId or anonymousId: events count under its value); trait identifiers
// are not.
func (i Identifier) Entity() bool { return i.Kind == KindUser || i.Kind == KindAnonymous }

// ParseIdentifier reads "kind:value" (the value may hold colons).
func ParseIdentifier(s string) (Identifier, error) {
	k, v, ok := strings.Cut(s, ":")
	if !ok || k == "" {
		return Identifier{}, fmt.Errorf("cannot parse identifier %q: want kind:value", s)
	}
	return Identifier{Kind: k, Value: v}, nil
}

// User and Anonymous make the identifiers of a userId and an anonymousId.
func User(v string) Identifier      { return Identifier{KindUser, v} }
func Anonymous(v string) Identifier { return Identifier{KindAnonymous, v} }

// LinkKind says which call asked for a link: an identify (or a trait
// identifier) or an alias, which alone may merge two known users.
type LinkKind string

// The link kinds.
const (
	KindIdentify LinkKind = "identify"
	KindAlias    LinkKind = "alias"
	// KindForget is no link: a deletion request (the profile API's
	// DELETE). The person To is in, or To alone when it is in none, is
	// forgotten: Graph.Apply decides Forgotten.
	KindForget LinkKind = "forget"
)

// Request asks the linker to make From and To one person. To is the side
// that wins between equals (see Graph.Apply).
type Request struct {
	From, To Identifier
	Kind     LinkKind
	// At is the cause event's time (event.Timestamp), the link's time for
	// the point-in-time rule; MessageID is the cause's messageId.
	At        time.Time
	MessageID string
	// Suppress (KindForget only): the person's entity ids are suppressed
	// too, their later events dropped at ingest.
	Suppress bool
}

// Options are the identity rules of config.Identity.
type Options struct {
	// Traits maps each trait identifier path to its kind.
	Traits []TraitPath
	// Blocked holds the blocked values, lowercased and trimmed.
	Blocked         map[string]bool
	MaxAnonymousIDs int
	MaxIdentifiers  int
	MergeKnownUsers bool
}

// TraitPath is one configured trait identifier.
type TraitPath struct{ Path, Kind string }

// Kinds are the identifier kinds a person can be named by: user_id,
// anonymous_id and the trait identifiers' (a deletion's ?kind=).
func (o *Options) Kinds() []string {
	out := []string{KindUser, KindAnonymous}
	for _, t := range o.Traits {
		out = append(out, t.Kind)
	}
	return out
}

// FromConfig returns the Options of a defaulted config block.
func FromConfig(c config.Identity) Options {
	o := Options{
		Blocked:         map[string]bool{"": true},
		MaxAnonymousIDs: c.MaxAnonymousIDs,
		MaxIdentifiers:  c.MaxIdentifiers,
		MergeKnownUsers: c.MergeKnownUsers,
	}
	for _, p := range c.TraitIdentifiers {
		o.Traits = append(o.Traits, TraitPath{Path: p, Kind: config.TraitKind(p)})
	}
	for _, v := range c.BlockedValues {
		o.Blocked[normal(v)] = true
	}
	return o
}

// DefaultOptions are the Options of the default config block.
func DefaultOptions() Options {
	var c config.Config
	c.ApplyDefaults()
	return FromConfig(c.Identity)
}

func normal(v string) string { return strings.ToLower(strings.TrimSpace(v)) }

// IsBlocked reports whether a value must never link.
func (o *Options) IsBlocked(v string) bool { return o.Blocked[normal(v)] }

// Requests returns the links an event asks for: an identify or alias with
// a userId links its anonymousId to it (kind identify), an alias its
// previousId (kind alias); each trait identifier of an identify or alias
// is linked to its userId, else its anonymousId. Other events ask for
// none. Blocked values are kept: the linker refuses them, with a reason.
// Requests of a value with itself are left out.
func (o *Options) Requests(ev *event.Event) []Request {
	if ev.Type != event.Identify && ev.Type != event.Alias {
		return nil
	}
	var reqs []Request
	add := func(from, to Identifier, kind LinkKind) {
		if from.Value == to.Value && (from.Entity() || from.Kind == KindPrevious) && to.Entity() {
			return // one entity already
		}
		reqs = append(reqs, Request{From: from, To: to, Kind: kind, At: ev.Timestamp, MessageID: ev.MessageID})
	}
	var to Identifier
	switch {
	case ev.UserID != "":
		to = User(ev.UserID)
		if ev.AnonymousID != "" {
			add(Anonymous(ev.AnonymousID), to, KindIdentify)
		}
		if ev.Type == event.Alias && ev.PreviousID != "" {
			add(Identifier{KindPrevious, ev.PreviousID}, to, KindAlias)
		}
	case ev.AnonymousID != "":
		to = Anonymous(ev.AnonymousID)
	default:
		return nil
	}
	for _, tp := range o.Traits {
		v, ok := ev.Lookup(tp.Path)
		if s, isStr := v.(string); ok && isStr {
			add(Identifier{tp.Kind, normal(s)}, to, KindIdentify)
		}
	}
	return reqs
}
