package scorer

import "time"

// WithRebuildLimits overrides the history rebuild's caps, so tests can
// reach them with a few records.
func WithRebuildLimits(records int, d time.Duration) Option {
	return func(s *Server) { s.rebuildLimits = rebuildLimits{records: records, time: d} }
}

// LinksRead is how many identity links ids read since its Run started.
func LinksRead(ids *Identities) int64 { return ids.read.Load() }

// IdentitiesReady reports whether ids has caught up once.
func IdentitiesReady(ids *Identities) bool { return ids.ready.Load() }
