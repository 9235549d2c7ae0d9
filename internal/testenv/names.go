package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// Topic returns a Kafka topic name no other test uses:
// "<prefix>.<test name>.<random>". It creates nothing; the test brokers create
// topics on first use. It serves as well for consumer group ids.
func Topic(t testing.TB, prefix string) string {
	name := prefix + "." + sanitize(t.Name(), "._-", 120) + "." + randomHex(4)
	if len(name) > 249 { // Kafka's limit
		name = name[len(name)-249:]
	}
	return name
}

// RedisKeyPrefix returns a prefix, "test:<test name>:<random>:", for the keys
// a test writes to the shared Redis. The keys under it are deleted when t ends.
func RedisKeyPrefix(t testing.TB) string {
	t.Helper()
	addr := Redis(t)
	prefix := "test:" + sanitize(t.Name(), "._-", 80) + ":" + randomHex(4) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		cursor := "0"
		for {
			r, err := redisDo(ctx, addr, []string{"SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000"})
			if err != nil {
				t.Logf("testenv: cannot clean up Redis keys %s*: %v", prefix, err)
				return
			}
			page := r[0].([]any)
			cursor = page[0].(string)
			var del []string
			for _, k := range page[1].([]any) {
				del = append(del, k.(string))
			}
			if len(del) > 0 {
				redisDo(ctx, addr, append([]string{"DEL"}, del...))
			}
			if cursor == "0" {
				return
			}
		}
	})
	return prefix
}

// RedisDB returns the shared Redis and a logical database no other running
// test uses, empty; it is emptied again when t ends. Database 0 is never
// handed out.
func RedisDB(t testing.TB) (addr string, db int) {
	t.Helper()
	addr = Redis(t)
	ctx := context.Background()
	// The counter lives in the server, so test binaries sharing it agree.
	r, err := redisDo(ctx, addr, []string{"INCR", "pulse-testenv:next-db"}, []string{"CONFIG", "GET", "databases"})
	if err != nil {
		fatal(t, fmt.Errorf("cannot pick a Redis database: %w", err))
	}
	n := r[0].(int64)
	dbs := redisDatabases
	if kv, ok := r[1].([]any); ok && len(kv) == 2 {
		if v, err := strconv.Atoi(kv[1].(string)); err == nil {
			dbs = v
		}
	}
	if dbs < 2 {
		fatal(t, fmt.Errorf("redis at %s has %d databases; RedisDB needs at least 2", addr, dbs))
	}
	db = 1 + int((n-1)%int64(dbs-1))
	flush := func() error {
		_, err := redisDo(ctx, addr, []string{"SELECT", strconv.Itoa(db)}, []string{"FLUSHDB"})
		return err
	}
	if err := flush(); err != nil {
		fatal(t, fmt.Errorf("cannot empty Redis database %d: %w", db, err))
	}
	t.Cleanup(func() {
		if err := flush(); err != nil {
			t.Logf("testenv: cannot empty Redis database %d: %v", db, err)
		}
	})
	return addr, db
}

// ClickHouseDatabase creates a database of its own for t in the shared
// ClickHouse and drops it when t ends. Its name is "test_<test name>_<random>".
func ClickHouseDatabase(t testing.TB) string {
	t.Helper()
	_, httpAddr := ClickHouse(t)
	name := "test_" + sanitize(t.Name(), "_", 60) + "_" + randomHex(4)
	ctx := context.Background()
	if _, err := clickhouseQuery(ctx, httpAddr, "CREATE DATABASE "+name); err != nil {
		fatal(t, fmt.Errorf("cannot create ClickHouse database: %w", err))
	}
	t.Cleanup(func() {
		if _, err := clickhouseQuery(ctx, httpAddr, "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Logf("testenv: cannot drop ClickHouse database %s: %v", name, err)
		}
	})
	return name
}

// sanitize keeps ASCII letters, digits and the allowed punctuation of s,
// turning anything else into the last allowed rune, and keeps the last max
// bytes, where subtest names differ.
func sanitize(s, allowed string, max int) string {
	repl := rune(allowed[len(allowed)-1])
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(allowed, r):
			return r
		}
		return repl
	}, s)
	if len(s) > max {
		s = s[len(s)-max:]
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
