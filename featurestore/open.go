package featurestore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/pulse-rt/pulse/config"
)

// Open opens the store cfg.Store.Backend names: "pebble" (the default) at
// cfg.Store.Path, or "redis" at cfg.Redis with cfg.Store.TTL; either with
// cfg.Store.RowCacheMB of vectors in memory. It expects a config with
// defaults applied, as config.Load returns it.
func Open(cfg *config.Config) (Store, error) {
	switch cfg.Store.Backend {
	case "", "pebble":
		if cfg.Store.Path == "" {
			return nil, errors.New("cannot open feature store: store.path is empty")
		}
		// Synced: a write the stream was told is done must survive a
		// crash of the process (see PebbleOptions.Sync).
		return OpenPebble(cfg.Store.Path, PebbleOptions{RowCacheSize: int64(cfg.Store.RowCacheMB) << 20, Sync: true})
	case "redis":
		return OpenRedis(cfg.Redis, RedisOptions{TTL: cfg.Store.TTL.D(), CacheSize: int64(cfg.Store.RowCacheMB) << 20})
	}
	return nil, fmt.Errorf("cannot open feature store: unknown backend %q (want pebble or redis)", cfg.Store.Backend)
}

// OpenWriter opens the store as Open does, for a process that writes
// vectors and serves no reads (pulse stream, pulse backfill): with no cache
// in front of it. A Redis near cache there would have Redis report every
// vector this process writes back to it, for reads it never makes; a Pebble
// row cache would copy every write.
func OpenWriter(cfg *config.Config) (Store, error) {
	c := *cfg
	c.Store.RowCacheMB = -1
	return Open(&c)
}

// checkName rejects names that would make two keys collide: keys join
// entity, segment and id with '/' (Pebble) or ':' (Redis), and only the id
// comes last.
func checkName(what, name string) error {
	if name == "" {
		return fmt.Errorf("empty %s name", what)
	}
	if strings.ContainsAny(name, "/:") {
		return fmt.Errorf("%s name %q contains '/' or ':'", what, name)
	}
	return nil
}

func checkNames(entity, segment string) error {
	if err := checkName("entity", entity); err != nil {
		return err
	}
	return checkSegment(segment)
}

// checkSegment allows ':' in a segment name, as in the automatic RFM
// segments rfm:<group>: a segment name ends every key that holds it (Pebble
// m/<entity>/<segment>/<id>, Redis <prefix>s:<entity>:<segment>), after an
// entity name that has no ':' or '/', so it cannot run into another key.
func checkSegment(name string) error {
	if name == "" {
		return fmt.Errorf("empty segment name")
	}
	if strings.Contains(name, "/") {
		return fmt.Errorf("segment name %q contains '/'", name)
	}
	return nil
}

func checkMembersArgs(entity, segment string, limit int) error {
	if err := checkNames(entity, segment); err != nil {
		return err
	}
	if limit <= 0 {
		return fmt.Errorf("segment members limit %d, want > 0", limit)
	}
	return nil
}

// checkBatch validates a whole batch before any of it is written.
func checkBatch(batch []Update) error {
	for i := range batch {
		u := &batch[i]
		if err := checkName("entity", u.Vector.Entity); err != nil {
			return fmt.Errorf("cannot write update %d: %w", i, err)
		}
		if u.Vector.ID == "" {
			return fmt.Errorf("cannot write update %d: empty %s id", i, u.Vector.Entity)
		}
		for _, segs := range [][]string{u.Enter, u.Exit} {
			for _, s := range segs {
				if err := checkSegment(s); err != nil {
					return fmt.Errorf("cannot write update %d: %w", i, err)
				}
			}
		}
	}
	return nil
}
