package stream

import (
	"github.com/cockroachdb/pebble"
	"github.com/pulse-rt/pulse/internal/keyfilter"
)

// buildSeenFilter reads every seen id of the partition's Pebble state
// into a filter, so the dedupe of an event that was never seen (nearly
// all of them) costs no Pebble lookup. Every id written under pkSeen is
// added before a later batch asks.
func buildSeenFilter(db *pebble.DB) (*keyfilter.Filter, error) { return keyfilter.Build(db, pkSeen) }
