package loadtest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/featurestore"
)

// RedisStore opens, at addr, the Redis store `loadtest predict -embedded`
// fills and reads: under a key prefix of its own, so a shared server's
// other keys are left alone.
func RedisStore(addr string, opts featurestore.RedisOptions) (*featurestore.Redis, error) {
	return featurestore.OpenRedis(config.Redis{Addr: addr, KeyPrefix: "pulse-loadtest:"}, opts)
}

// RedisFloor reads one user's vector through the Redis store's read path
// with its cache off (AppendRaw: one MGET, shared by concurrent callers as
// the scorer's are), from the loadtest's store (RedisStore): the
// PredictOptions.Floor of `loadtest predict -embedded -store redis -floor`;
// slots is its RedisOptions.ReadSlots (0: the default), the scorer's.
func RedisFloor(addr string, slots int) (read func(ctx context.Context, user uint64) error, closeFn func(), err error) {
	st, err := RedisStore(addr, featurestore.RedisOptions{CacheSize: -1, ReadSlots: slots})
	if err != nil {
		return nil, nil, err
	}
	type scratch struct {
		buf []byte
		raw [][]byte
	}
	pool := sync.Pool{New: func() any { return new(scratch) }}
	read = func(ctx context.Context, user uint64) error {
		s := pool.Get().(*scratch)
		defer pool.Put(s)
		var id [20]byte
		ids := [1]string{string(strconv.AppendUint(id[:0], user, 10))}
		var err error
		s.buf, s.raw, err = st.AppendRaw(ctx, "user", ids[:], s.buf[:0], s.raw[:0])
		if err != nil {
			return err
		}
		if s.raw[0] == nil {
			return fmt.Errorf("user %d not in the store", user)
		}
		return nil
	}
	return read, func() { st.Close() }, nil
}

// RedisServerCPU returns a function reading the CPU time redis-server at
// addr has used (INFO cpu), for the loadtest's CPU per request
// (PredictOptions.ServerCPU).
func RedisServerCPU(addr string) (read func() (time.Duration, error), closeFn func()) {
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	return func() (time.Duration, error) {
		info, err := c.Info(context.Background(), "cpu").Result()
		if err != nil {
			return 0, err
		}
		var total float64
		for _, line := range strings.Split(info, "\n") {
			name, val, ok := strings.Cut(strings.TrimSpace(line), ":")
			if ok && (name == "used_cpu_sys" || name == "used_cpu_user") {
				f, err := strconv.ParseFloat(val, 64)
				if err != nil {
					return 0, fmt.Errorf("cannot parse redis INFO %s: %w", name, err)
				}
				total += f
			}
		}
		return time.Duration(total * float64(time.Second)), nil
	}, func() { c.Close() }
}
