package system

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/pulse-rt/pulse/event"
	"github.com/pulse-rt/pulse/history"
)

// historyEvents is the scorer's reader of profiles' traits and recent
// events: the history's Reader once there is one. `pulse dev` starts its
// local ClickHouse after the scorer, so the reader arrives late.
type historyEvents struct {
	r atomic.Pointer[history.Reader]
}

var errNoHistory = errors.New("no history: clickhouse.addr is not set (or its local ClickHouse is still starting)")

func (h *historyEvents) RecentEvents(ctx context.Context, ids []string, n int) ([]event.Raw, error) {
	r := h.r.Load()
	if r == nil {
		return nil, errNoHistory
	}
	return r.RecentEvents(ctx, ids, n)
}

func (h *historyEvents) LatestTraits(ctx context.Context, ids []string) (map[string]any, error) {
	r := h.r.Load()
	if r == nil {
		return nil, errNoHistory
	}
	return r.LatestTraits(ctx, ids)
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
