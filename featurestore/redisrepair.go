package featurestore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RepairReport says what RepairMembers found and did.
type RepairReport struct {
	Vectors int64 // vectors read
	Lists   int   // segment member lists walked
	Members int64 // members read from them
	// Added are members put back into a list their vector names; Removed,
	// members taken out of a list their vector does not name. With DryRun,
	// what would have been.
	Added, Removed int64
}

// RepairMembers makes the member lists of entity's segments agree with
// its stored vectors: each vector names the segments its entity is in, and
// is what the stream last wrote for it. Redis keeps member lists by the
// changes the stream tells it (ZADD on enter, ZREM on exit), relative to
// the stream's own state; a Redis that lost its last writes (a failover to
// a replica that had not received them, a restart from an older snapshot
// or AOF) keeps vectors that heal at their entity's next write, but the
// next change is then told relative to a membership the store no longer
// has, and a list can keep a member, or miss one, for good. This puts them
// right, from the vectors.
//
// It runs beside a live stream: each fix is made under WATCH of the
// entity's vector (MULTI/EXEC), so a vector written meanwhile makes the fix
// start over from it, and the stream's own changes only ever move a list
// toward its newest vector. A member whose vector is missing (expired by
// the store's TTL, or lost) stays: an expired member stays a member, as
// documented on RedisOptions.TTL. Lists of segments no longer configured
// are walked too (their members' vectors no longer name them). progress,
// when not nil, is called every 10,000 vectors or members read.
func (r *Redis) RepairMembers(ctx context.Context, entity string, dryRun bool, progress func(RepairReport)) (RepairReport, error) {
	var rep RepairReport
	if err := checkName("entity", entity); err != nil {
		return rep, err
	}
	tick := func() {
		if progress != nil && (rep.Vectors+rep.Members)%10_000 == 0 {
			progress(rep)
		}
	}
	// Lists that miss a member: every vector against the lists it names.
	vprefix := r.vectorKey(entity, "")
	err := r.scan(ctx, globEscape(vprefix)+"*", func(keys []string) error {
		vals, err := r.c.MGet(ctx, keys...).Result()
		if err != nil {
			return err
		}
		type check struct {
			id, seg string
			score   *redis.FloatCmd
		}
		var checks []check
		_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, val := range vals {
				s, ok := val.(string)
				if !ok {
					continue // gone since the SCAN
				}
				rep.Vectors++
				tick()
				v, err := decode(s)
				if err != nil {
					return fmt.Errorf("vector %s: %w", keys[i], err)
				}
				id := strings.TrimPrefix(keys[i], vprefix)
				for _, seg := range v.Segments {
					checks = append(checks, check{id, seg, p.ZScore(ctx, r.segmentKey(entity, seg), id)})
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for _, c := range checks {
			if errors.Is(c.score.Err(), redis.Nil) {
				if err := r.fixMember(ctx, entity, c.id, c.seg, dryRun, &rep); err != nil {
					return err
				}
			} else if c.score.Err() != nil {
				return c.score.Err()
			}
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("cannot repair %s's member lists: %w", entity, redisErr(err))
	}
	// Lists that keep a member: every list's members against their vectors.
	sprefix := r.segmentKey(entity, "")
	var lists []string
	if err := r.scan(ctx, globEscape(sprefix)+"*", func(keys []string) error {
		lists = append(lists, keys...)
		return nil
	}); err != nil {
		return rep, fmt.Errorf("cannot repair %s's member lists: %w", entity, redisErr(err))
	}
	for _, list := range lists {
		rep.Lists++
		seg := strings.TrimPrefix(list, sprefix)
		var cursor uint64
		for {
			// ZSCAN answers members and scores in turn.
			page, next, err := r.c.ZScan(ctx, list, cursor, "", 1000).Result()
			if err != nil {
				return rep, fmt.Errorf("cannot repair %s's member lists: %w", entity, redisErr(err))
			}
			var ids, keys []string
			for i := 0; i < len(page); i += 2 {
				ids = append(ids, page[i])
				keys = append(keys, r.vectorKey(entity, page[i]))
			}
			if len(keys) > 0 {
				vals, err := r.c.MGet(ctx, keys...).Result()
				if err != nil {
					return rep, fmt.Errorf("cannot repair %s's member lists: %w", entity, redisErr(err))
				}
				for i, val := range vals {
					rep.Members++
					tick()
					s, ok := val.(string)
					if !ok {
						continue // no vector: the member stays
					}
					v, err := decode(s)
					if err != nil {
						return rep, fmt.Errorf("cannot repair %s's member lists: vector %s: %w", entity, keys[i], err)
					}
					if !slices.Contains(v.Segments, seg) {
						if err := r.fixMember(ctx, entity, ids[i], seg, dryRun, &rep); err != nil {
							return rep, fmt.Errorf("cannot repair %s's member lists: %w", entity, redisErr(err))
						}
					}
				}
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	return rep, nil
}

// globEscape escapes the characters SCAN's MATCH reads as a pattern, so a
// key prefix matches only itself.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// scan calls fn with the keys that match pattern, a page at a time.
func (r *Redis) scan(ctx context.Context, pattern string, fn func(keys []string) error) error {
	var cursor uint64
	for {
		keys, next, err := r.c.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := fn(keys); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// fixMember makes id's membership of seg what its vector says, under WATCH
// of the vector: a write of it meanwhile makes the check start over. No
// vector: nothing changes.
func (r *Redis) fixMember(ctx context.Context, entity, id, seg string, dryRun bool, rep *RepairReport) error {
	vkey, skey := r.vectorKey(entity, id), r.segmentKey(entity, seg)
	for attempt := 0; ; attempt++ {
		err := r.c.Watch(ctx, func(tx *redis.Tx) error {
			s, err := tx.Get(ctx, vkey).Result()
			if errors.Is(err, redis.Nil) {
				return nil
			}
			if err != nil {
				return err
			}
			v, err := decode(s)
			if err != nil {
				return fmt.Errorf("vector %s: %w", vkey, err)
			}
			want := slices.Contains(v.Segments, seg)
			_, err = tx.ZScore(ctx, skey, id).Result()
			has := err == nil
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			if want == has {
				return nil
			}
			if dryRun {
				rep.count(want)
				return nil
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				if want {
					p.ZAdd(ctx, skey, redis.Z{Member: id})
				} else {
					p.ZRem(ctx, skey, id)
				}
				return nil
			})
			if err == nil {
				rep.count(want)
			}
			return err
		}, vkey)
		if !errors.Is(err, redis.TxFailedErr) || attempt == 9 {
			return err
		}
	}
}

func (rep *RepairReport) count(added bool) {
	if added {
		rep.Added++
	} else {
		rep.Removed++
	}
}
