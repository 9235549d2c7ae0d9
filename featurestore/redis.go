package featurestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/pulse-rt/pulse/config"
)

// RedisOptions tune OpenRedis. The zero value is ready to use.
type RedisOptions struct {
	// TTL expires the vector of an entity not written for this long (each
	// Write sets it again). Default 0: vectors never expire. Member lists
	// and counts do not expire: membership is the stream's decision, and an
	// expired member stays a member whose Get answers ErrNotFound.
	TTL time.Duration
	// Timeout bounds one command or pipeline's network reads and writes, and
	// the dial, overriding the default 1s. A context deadline, if sooner,
	// wins. With Redis down, Get fails after at most about twice this.
	Timeout time.Duration
	// PoolSize is the most connections kept open for writes and segment
	// queries, overriding go-redis's default of 10 per GOMAXPROCS. Vector
	// reads have their own connections (ReadSlots, mgetBatcher).
	PoolSize int
	// ReadSlots bounds the vector reads (MGETs) out at once, each on a
	// connection of its own; reads beyond it queue and go out together as
	// one MGET when a slot frees (mgetBatcher). Default 2, the best on two
	// shared cores; a trace of the slow reads (tools/traceslow) shows
	// whether they wait for a slot.
	ReadSlots int
	// CacheSize bounds the vectors kept in this process's memory after a
	// read, in bytes: default 64 MiB, about 150k users of 25 features;
	// negative turns the cache off. Redis reports every change of a cached
	// vector (CLIENT TRACKING), which drops it; see nearCache. A server
	// that refuses tracking (before Redis 6) leaves the cache off, with a
	// warning in the log.
	CacheSize int64
	// Logger receives the cache's warnings, overriding slog.Default().
	Logger *slog.Logger
}

// Redis is the online store on a Redis server, shared by many scorers. It is
// safe for concurrent use.
//
// Keys, under config.Redis.KeyPrefix:
//
//	v:<entity>:<id>         a string, the encoded Vector
//	s:<entity>:<segment>    a sorted set of member ids, all with score 0
//
// Score 0 makes a sorted set ordered by id bytes, so ZRANGE BYLEX pages
// members from a cursor; ZADD and ZREM are idempotent, so ZCARD stays exact
// when a batch is replayed.
type Redis struct {
	c      *redis.Client
	reads  *mgetBatcher // Get and GetMany
	near   *nearCache   // nil: off
	prefix string
	ttl    time.Duration
}

var _ Store = (*Redis)(nil)

// OpenRedis connects to cfg.Addr and checks that the server answers.
func OpenRedis(cfg config.Redis, opts RedisOptions) (*Redis, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.TTL < 0 {
		return nil, fmt.Errorf("cannot open redis feature store: negative TTL %v", opts.TTL)
	}
	if opts.TTL > 0 && opts.TTL < time.Millisecond {
		return nil, fmt.Errorf("cannot open redis feature store: TTL %v below Redis's 1ms resolution", opts.TTL)
	}
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c := redis.NewClient(&redis.Options{
		Addr:     addr,
		Password: cfg.Password,
		DB:       cfg.DB,
		// A scorer answers in under a millisecond: a dead connection is
		// retried once on a fresh one, then the caller hears of it,
		// rather than waiting through go-redis's default 3 retries with
		// backoff and 5 dial attempts.
		MaxRetries:            1,
		DialerRetries:         1,
		DialTimeout:           opts.Timeout,
		ReadTimeout:           opts.Timeout,
		WriteTimeout:          opts.Timeout,
		PoolTimeout:           opts.Timeout,
		ContextTimeoutEnabled: true,
		PoolSize:              opts.PoolSize,
		// Warm connections, so the first requests after start or a burst do
		// not pay a dial.
		MinIdleConns: runtime.GOMAXPROCS(0),
		// CLIENT SETINFO costs a round trip per new connection and servers
		// before 7.2 reject it.
		DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*opts.Timeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("cannot reach redis at %s: %w", addr, err)
	}
	reads := newMgetBatcher(addr, cfg.Password, cfg.DB, cfg.KeyPrefix, opts.Timeout, opts.ReadSlots)
	if err := reads.warm(ctx); err != nil {
		reads.close()
		c.Close()
		return nil, fmt.Errorf("cannot reach redis at %s: %w", addr, err)
	}
	r := &Redis{c: c, reads: reads, prefix: cfg.KeyPrefix, ttl: opts.TTL}
	if opts.CacheSize >= 0 {
		if opts.CacheSize == 0 {
			opts.CacheSize = 64 << 20
		}
		if opts.Logger == nil {
			opts.Logger = slog.Default()
		}
		var err error
		r.near, err = openNearCache(ctx, addr, cfg.Password, cfg.KeyPrefix, opts.CacheSize, opts.TTL, opts.Timeout, opts.Logger)
		var nt errNoTracking
		switch {
		case errors.As(err, &nt):
			opts.Logger.Warn("redis feature store without its near cache: every read goes to redis", "addr", addr, "err", err)
		case err != nil:
			reads.close()
			c.Close()
			return nil, fmt.Errorf("cannot reach redis at %s: %w", addr, err)
		}
	}
	return r, nil
}

func (r *Redis) vectorKey(entity, id string) string {
	return r.prefix + "v:" + entity + ":" + id
}

// appendVectorKey appends to dst the key of id's vector, as vectorKey
// names it, for the readers that write keys into their own buffers.
func appendVectorKey(dst []byte, prefix, entity, id string) []byte {
	dst = append(dst, prefix...)
	dst = append(dst, "v:"...)
	dst = append(dst, entity...)
	dst = append(dst, ':')
	return append(dst, id...)
}

func (r *Redis) segmentKey(entity, segment string) string {
	return r.prefix + "s:" + entity + ":" + segment
}

// Get returns the entity's vector, or ErrNotFound.
func (r *Redis) Get(ctx context.Context, entity, id string) (Vector, error) {
	if err := checkName("entity", entity); err != nil {
		return Vector{}, err
	}
	ids := [1]string{id}
	var raws [1][]byte
	_, raw, err := r.read(ctx, entity, ids[:], nil, raws[:0])
	if err != nil {
		return Vector{}, fmt.Errorf("cannot get %s %q: %w", entity, id, redisErr(err))
	}
	if raw[0] == nil {
		return Vector{}, fmt.Errorf("cannot get %s %q: %w", entity, id, ErrNotFound)
	}
	v, err := Decode(raw[0])
	if err != nil {
		return Vector{}, fmt.Errorf("cannot get %s %q: %w", entity, id, err)
	}
	v.Entity, v.ID = entity, id
	return v, nil
}

// GetMany returns vectors in the order of ids, from one MGET (shared with
// the reads of concurrent callers); found[i] says whether ids[i] exists.
func (r *Redis) GetMany(ctx context.Context, entity string, ids []string) ([]Vector, []bool, error) {
	if err := checkName("entity", entity); err != nil {
		return nil, nil, err
	}
	vecs := make([]Vector, len(ids))
	found := make([]bool, len(ids))
	if len(ids) == 0 {
		return vecs, found, nil
	}
	_, raw, err := r.AppendRaw(ctx, entity, ids, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	for i, b := range raw {
		if b == nil {
			continue // no such key
		}
		v, err := Decode(b)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot get %s %q: %w", entity, ids[i], err)
		}
		v.Entity, v.ID = entity, ids[i]
		vecs[i], found[i] = v, true
	}
	return vecs, found, nil
}

// Write sends a batch of updates in one pipeline: one round trip. It is not
// atomic (a pipeline, not MULTI, so it also suits Redis Cluster); a batch
// that fails part way is replayed whole, which the idempotent commands allow.
func (r *Redis) Write(ctx context.Context, batch []Update) error {
	_, _, err := r.write(ctx, batch, "", 0)
	return err
}

// WriteMarked is Write with writer's mark set last in the same pipeline
// (GETSET: every Redis has it, where SET ... GET needs 6.2). Redis
// executes, replicates and logs a connection's commands in order, so a
// Redis that still has the mark has every update before it.
func (r *Redis) WriteMarked(ctx context.Context, batch []Update, writer string, mark int64) (prev int64, found bool, err error) {
	if writer == "" {
		return 0, false, errors.New("cannot write a mark: empty writer name")
	}
	return r.write(ctx, batch, writer, mark)
}

// markKey is the key of a writer's mark.
func (r *Redis) markKey(writer string) string {
	return r.prefix + "mark:" + writer
}

func (r *Redis) write(ctx context.Context, batch []Update, writer string, mark int64) (prev int64, found bool, err error) {
	if err := checkBatch(batch); err != nil {
		return 0, false, err
	}
	if len(batch) == 0 && writer == "" {
		return 0, false, nil
	}
	// One buffer holds every encoded vector; each SET keeps a slice of it
	// until the pipeline is sent (growing the buffer leaves earlier slices
	// pointing at the old, unchanged array).
	var buf []byte
	var old *redis.StringCmd
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range batch {
			u := &batch[i]
			e, id := u.Vector.Entity, u.Vector.ID
			if u.Delete {
				p.Del(ctx, r.vectorKey(e, id))
			} else {
				start := len(buf)
				buf = Encode(u.Vector, buf)
				p.Set(ctx, r.vectorKey(e, id), buf[start:len(buf):len(buf)], r.ttl)
			}
			for _, seg := range u.Enter {
				p.ZAdd(ctx, r.segmentKey(e, seg), redis.Z{Member: id})
			}
			for _, seg := range u.Exit {
				p.ZRem(ctx, r.segmentKey(e, seg), id)
			}
		}
		if writer != "" {
			old = p.GetSet(ctx, r.markKey(writer), mark)
		}
		return nil
	})
	if r.near != nil {
		// Read your writes: Redis reports these changes to the near
		// cache too, but only soon; dropped now, a read that starts once
		// Write returns cannot answer the old vector.
		var kb [128]byte
		for i := range batch {
			v := &batch[i].Vector
			r.near.rows.drop(appendVectorKey(kb[:0], r.prefix, v.Entity, v.ID))
		}
	}
	if err != nil && !(old != nil && errors.Is(err, redis.Nil) && errors.Is(old.Err(), redis.Nil)) {
		return 0, false, fmt.Errorf("cannot write %d updates to redis: %w", len(batch), redisErr(err))
	}
	if old == nil || errors.Is(old.Err(), redis.Nil) {
		return 0, false, nil
	}
	prev, err = strconv.ParseInt(old.Val(), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("cannot read the mark of %s: %q: %w", writer, old.Val(), err)
	}
	return prev, true, nil
}

// SegmentCount is the number of members of a segment (ZCARD).
func (r *Redis) SegmentCount(ctx context.Context, entity, segment string) (int64, error) {
	if err := checkNames(entity, segment); err != nil {
		return 0, err
	}
	n, err := r.c.ZCard(ctx, r.segmentKey(entity, segment)).Result()
	if err != nil {
		return 0, fmt.Errorf("cannot count members of %s: %w", segment, redisErr(err))
	}
	return n, nil
}

// SegmentMembers lists member ids in byte order after cursor ("" = from the
// start), at most limit; next is "" at the end. The cursor is the last id
// of the previous page, so members added or removed meanwhile never make a
// page repeat or skip an id that stayed a member.
func (r *Redis) SegmentMembers(ctx context.Context, entity, segment, cursor string, limit int) ([]string, string, error) {
	if err := checkMembersArgs(entity, segment, limit); err != nil {
		return nil, "", err
	}
	start := "-"
	if cursor != "" {
		start = "(" + cursor
	}
	// One more than asked says whether there is a next page.
	ids, err := r.c.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: r.segmentKey(entity, segment), Start: start, Stop: "+", ByLex: true, Count: int64(limit) + 1,
	}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("cannot list members of %s: %w", segment, redisErr(err))
	}
	if len(ids) > limit {
		ids = ids[:limit]
		return ids, ids[limit-1], nil
	}
	return ids, "", nil
}

// read answers from the near cache what it can and reads the rest with
// MGET.
func (r *Redis) read(ctx context.Context, entity string, ids []string, buf []byte, raw [][]byte) ([]byte, [][]byte, error) {
	if r.near == nil {
		return r.reads.read(ctx, entity, ids, buf, raw)
	}
	if !r.near.usable() {
		r.near.bypassed.Add(uint64(len(ids)))
		return r.reads.read(ctx, entity, ids, buf, raw)
	}
	return r.near.appendRaw(ctx, r.reads, entity, ids, buf, raw)
}

// CacheStats counts what the near cache answered; zero when it is off.
func (r *Redis) CacheStats() CacheStats {
	if r.near == nil {
		return CacheStats{}
	}
	return r.near.stats()
}

// Close closes the connections. Calls after Close return ErrClosed.
func (r *Redis) Close() error {
	if r.near != nil {
		r.near.close()
	}
	r.reads.close()
	return redisErr(r.c.Close())
}

// redisErr turns go-redis's closed-client error into ErrClosed.
func redisErr(err error) error {
	if errors.Is(err, redis.ErrClosed) {
		return ErrClosed
	}
	return err
}

// AppendRaw appends the encoded vectors of ids to buf, from one MGET
// shared with concurrent readers; raw[i] is nil for an id the store does
// not have. See RawGetter.
func (r *Redis) AppendRaw(ctx context.Context, entity string, ids []string, buf []byte, raw [][]byte) ([]byte, [][]byte, error) {
	if err := checkName("entity", entity); err != nil {
		return buf, raw, err
	}
	raw = raw[:0]
	if len(ids) == 0 {
		return buf, raw, nil
	}
	buf, raw, err := r.read(ctx, entity, ids, buf, raw)
	if err != nil {
		return buf, raw[:0], fmt.Errorf("cannot get %d %ss: %w", len(ids), entity, redisErr(err))
	}
	return buf, raw, nil
}
