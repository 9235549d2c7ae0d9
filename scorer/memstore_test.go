package scorer_test

import (
	"context"
	"slices"
	"sort"
	"sync"

	"github.com/pulse-rt/pulse/featurestore"
)

// memStore is a small in-memory featurestore.Store for tests that are not
// about the store.
type memStore struct {
	mu      sync.Mutex
	vecs    map[string]featurestore.Vector
	members map[string][]string // entity/segment -> sorted ids
	err     error               // returned by every call when set
}

func newMemStore() *memStore {
	return &memStore{vecs: map[string]featurestore.Vector{}, members: map[string][]string{}}
}

func (m *memStore) Get(ctx context.Context, entity, id string) (featurestore.Vector, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return featurestore.Vector{}, m.err
	}
	v, ok := m.vecs[entity+"/"+id]
	if !ok {
		return featurestore.Vector{}, featurestore.ErrNotFound
	}
	return v, nil
}

func (m *memStore) GetMany(ctx context.Context, entity string, ids []string) ([]featurestore.Vector, []bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, nil, m.err
	}
	vecs := make([]featurestore.Vector, len(ids))
	found := make([]bool, len(ids))
	for i, id := range ids {
		vecs[i], found[i] = m.vecs[entity+"/"+id]
	}
	return vecs, found, nil
}

func (m *memStore) Write(ctx context.Context, batch []featurestore.Update) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range batch {
		v := u.Vector
		if u.Delete {
			delete(m.vecs, v.Entity+"/"+v.ID)
		} else {
			m.vecs[v.Entity+"/"+v.ID] = v
		}
		for _, s := range u.Enter {
			k := v.Entity + "/" + s
			if !slices.Contains(m.members[k], v.ID) {
				m.members[k] = append(m.members[k], v.ID)
				sort.Strings(m.members[k])
			}
		}
		for _, s := range u.Exit {
			k := v.Entity + "/" + s
			m.members[k] = slices.DeleteFunc(m.members[k], func(id string) bool { return id == v.ID })
		}
	}
	return nil
}

func (m *memStore) SegmentCount(ctx context.Context, entity, segment string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return 0, m.err
	}
	return int64(len(m.members[entity+"/"+segment])), nil
}

func (m *memStore) SegmentMembers(ctx context.Context, entity, segment, cursor string, limit int) ([]string, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, "", m.err
	}
	all := m.members[entity+"/"+segment]
	i := sort.SearchStrings(all, cursor)
	if i < len(all) && all[i] == cursor {
		i++
	}
	end := min(i+limit, len(all))
	ids := slices.Clone(all[i:end])
	next := ""
	if end < len(all) {
		next = all[end-1]
	}
	return ids, next, nil
}

func (m *memStore) Close() error { return nil }

func (m *memStore) fail(err error) {
	m.mu.Lock()
	m.err = err
	m.mu.Unlock()
}
