package system

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/history"
	"github.com/pulse-rt/pulse/identity"
	"github.com/pulse-rt/pulse/scorer"
)

// historyEvents is the scorer's reader of profiles' traits and recent
// events: the history's Reader once there is one. `pulse dev` starts its
// local ClickHouse after the scorer, so the reader arrives late.
type historyEvents struct {
	r atomic.Pointer[history.Reader]
}

func (h *historyEvents) RecentEvents(ctx context.Context, ids []string, n int) ([]event.Raw, error) {
	r := h.r.Load()
	if r == nil {
		return nil, scorer.ErrNoHistory
	}
	return r.RecentEvents(ctx, ids, n)
}

func (h *historyEvents) LatestTraits(ctx context.Context, ids []string) (map[string]any, error) {
	r := h.r.Load()
	if r == nil {
		return nil, scorer.ErrNoHistory
	}
	return r.LatestTraits(ctx, ids)
}

func (h *historyEvents) OldestRunningMutation(ctx context.Context) (time.Time, error) {
	r := h.r.Load()
	if r == nil {
		return time.Time{}, scorer.ErrNoHistory
	}
	return r.OldestRunningMutation(ctx)
}

func (h *historyEvents) ExportPerson(ctx context.Context, ids []identity.Identifier, each func(table string, row map[string]any) error) (map[string]int, error) {
	r := h.r.Load()
	if r == nil {
		return nil, scorer.ErrNoHistory
	}
	return r.ExportPerson(ctx, ids, each)
}

// openHistoryReader gives the profiles a Reader of the configured
// ClickHouse, once, when one is configured.
func (s *System) openHistoryReader() error {
	if s.Config.ClickHouse.Addr == "" || s.events.r.Load() != nil {
		return nil
	}
	conn, err := history.Open(s.Config.ClickHouse)
	if err != nil {
		return err
	}
	s.OnClose(func() { conn.Close() })
	s.events.r.Store(history.NewReader(conn, s.Config.ClickHouse.Database))
	return nil
}
