package featurestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	json "github.com/goccy/go-json"
)

// Served reads the online store as a running scorer serves it
// (GET /v1/entities/{entity}/{id}), for a command run beside a process
// that holds the store (pulse dev locks its Pebble). It is read-only:
// Write and the segment listings fail.
type Served struct {
	base string // http://host:port
	key  string // a key with the read scope
	hc   *http.Client
}

// OpenServed reads the store through the scorer at addr (host:port) with
// a read key.
func OpenServed(addr, readKey string) *Served {
	return &Served{base: "http://" + addr, key: readKey, hc: &http.Client{Timeout: 10 * time.Second}}
}

var errServedReadOnly = errors.New("the online store is read through the scorer: read-only")

// Get returns the entity's vector, or ErrNotFound.
func (s *Served) Get(ctx context.Context, entity, id string) (Vector, error) {
	u := s.base + "/v1/entities/" + url.PathEscape(entity) + "/" + url.PathEscape(id)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Vector{}, err
	}
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err := s.hc.Do(req)
	if err != nil {
		return Vector{}, fmt.Errorf("cannot read %s %s from the scorer: %w", entity, id, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return Vector{}, fmt.Errorf("cannot read %s %s from the scorer: %w", entity, id, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return Vector{}, ErrNotFound
	default:
		return Vector{}, fmt.Errorf("the scorer answered %s for %s %s: %s", resp.Status, entity, id, clipBody(body))
	}
	var v struct {
		Features  map[string]any `json:"features"`
		Segments  []string       `json:"segments"`
		UpdatedAt time.Time      `json:"updated_at"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return Vector{}, fmt.Errorf("cannot read the scorer's answer for %s %s: %w", entity, id, err)
	}
	return Vector{Entity: entity, ID: id, Features: v.Features, Segments: v.Segments, UpdatedAt: v.UpdatedAt}, nil
}

// GetMany gets each id in turn.
func (s *Served) GetMany(ctx context.Context, entity string, ids []string) ([]Vector, []bool, error) {
	vecs, found := make([]Vector, len(ids)), make([]bool, len(ids))
	for i, id := range ids {
		v, err := s.Get(ctx, entity, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		vecs[i], found[i] = v, true
	}
	return vecs, found, nil
}

// Write fails: the scorer's store is not written through it.
func (s *Served) Write(context.Context, []Update) error { return errServedReadOnly }

// SegmentCount fails: not needed by the commands that read through it.
func (s *Served) SegmentCount(context.Context, string, string) (int64, error) {
	return 0, errServedReadOnly
}

// SegmentMembers fails likewise.
func (s *Served) SegmentMembers(context.Context, string, string, string, int) ([]string, string, error) {
	return nil, "", errServedReadOnly
}

// Close does nothing.
func (s *Served) Close() error { return nil }

var _ Store = (*Served)(nil)

func clipBody(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
