package aggregate

import "slices"

// Reads lists the event fields Apply reads, as dotted paths (the form
// event.Lookup takes): "timestamp", "messageId" when a first, last,
// last_n or last_by_key feature orders by it, "event" and "type" when a feature filters
// on them, and the features' fields, each once, in config order. all is
// true when a where filter is set: an expression may read any field.
//
// A reader that decodes events for this Set need decode no more
// (event.NewProjection(set.Reads()) for the stream; the backfill's
// ClickHouse projection is the same question).
func (s *Set) Reads() (paths []string, all bool) {
	add := func(p string) {
		if !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	add("timestamp")
	for _, fi := range s.aggs {
		f := &s.feats[fi]
		if f.def.Where != "" {
			all = true
		}
		switch f.agg {
		case aggFirst, aggLast, aggLastN, aggLastByKey:
			add("messageId")
		}
		if f.def.Event != "" && f.def.Event != "*" {
			add("event")
		}
		if f.def.Type != "" {
			add("type")
		}
		if f.def.Field != "" {
			add(f.def.Field)
		}
	}
	return paths, all
}
