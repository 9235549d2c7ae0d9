package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// The environment that points every test binary at servers already running,
// as `make test` does through cmd/testservers.
const (
	EnvRedis          = "PULSE_TEST_REDIS"           // host:port
	EnvClickHouse     = "PULSE_TEST_CLICKHOUSE"      // host:port of the native protocol
	EnvClickHouseHTTP = "PULSE_TEST_CLICKHOUSE_HTTP" // host:port of the HTTP interface
	EnvKafka          = "PULSE_TEST_KAFKA"           // comma-separated seed brokers
)

// Main runs a package's tests and then stops the servers they started. Call
// it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	stopShared()
	os.Exit(code)
}

// shared is one server per test binary, started on first use.
type shared struct {
	once  sync.Once
	srv   *Server // nil when the environment named the server
	addrs []string
	err   error
}

var (
	sharedRedis, sharedClickHouse, sharedKafka shared

	sharedDirOnce sync.Once
	sharedDirPath string
	sharedDirErr  error
)

// sharedDir makes a directory for a shared server under one temporary
// directory that Main removes.
func sharedDir(name string) (string, error) {
	sharedDirOnce.Do(func() {
		removeStaleDirs()
		sharedDirPath, sharedDirErr = os.MkdirTemp("", fmt.Sprintf("pulse-testenv-%d-", os.Getpid()))
	})
	if sharedDirErr != nil {
		return "", sharedDirErr
	}
	dir := sharedDirPath + "/" + name
	return dir, os.MkdirAll(dir, 0o755)
}

func (sh *shared) get(t testing.TB, what string, fromEnv func() ([]string, error), start func(dir string) (*Server, error)) []string {
	t.Helper()
	sh.once.Do(func() {
		if addrs, err := fromEnv(); addrs != nil || err != nil {
			sh.addrs, sh.err = addrs, err
			return
		}
		dir, err := sharedDir(what)
		if err != nil {
			sh.err = err
			return
		}
		sh.srv, sh.err = start(dir)
		if sh.err == nil {
			sh.addrs = []string{sh.srv.Addr(), sh.srv.HTTPAddr()}
		}
	})
	if sh.err != nil {
		fatal(t, fmt.Errorf("no %s for tests: %w", what, sh.err))
	}
	return sh.addrs
}

// removeStaleDirs removes what test binaries that crashed or were killed left
// in the temporary directory; their servers died with them.
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "pulse-testenv-*-*"))
	for _, d := range dirs {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(d), "pulse-testenv-%d-", &pid); err != nil || pid <= 0 {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// fatal fails the test, with the install hint when a server is missing.
func fatal(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, errMissing) {
		t.Fatalf("testenv: %v", err)
	}
	t.Fatalf("testenv: %v\n(if a server is missing, run `make test-deps`)", err)
}

// Redis returns the host:port of a running redis-server: $PULSE_TEST_REDIS, or
// one started for this test binary. Tests sharing it keep apart with RedisDB
// or RedisKeyPrefix.
func Redis(t testing.TB) string {
	t.Helper()
	return sharedRedis.get(t, "redis", func() ([]string, error) {
		addr := os.Getenv(EnvRedis)
		if addr == "" {
			return nil, nil
		}
		if err := redisPing(context.Background(), addr); err != nil {
			return nil, fmt.Errorf("%s=%s does not answer: %w", EnvRedis, addr, err)
		}
		return []string{addr}, nil
	}, func(dir string) (*Server, error) { return newRedis(dir, false) })[0]
}

// ClickHouse returns the native-protocol and HTTP addresses (host:port) of a
// running clickhouse-server: $PULSE_TEST_CLICKHOUSE and
// $PULSE_TEST_CLICKHOUSE_HTTP, or one started for this test binary. Tests
// sharing it keep apart with ClickHouseDatabase.
func ClickHouse(t testing.TB) (native, http string) {
	t.Helper()
	addrs := sharedClickHouse.get(t, "clickhouse", func() ([]string, error) {
		native, http := os.Getenv(EnvClickHouse), os.Getenv(EnvClickHouseHTTP)
		if native == "" && http == "" {
			return nil, nil
		}
		if native == "" || http == "" {
			return nil, fmt.Errorf("set both %s and %s", EnvClickHouse, EnvClickHouseHTTP)
		}
		if _, err := clickhouseQuery(context.Background(), http, "SELECT 1"); err != nil {
			return nil, fmt.Errorf("%s=%s does not answer: %w", EnvClickHouseHTTP, http, err)
		}
		return []string{native, http}, nil
	}, newClickHouse)
	return addrs[0], addrs[1]
}

// Kafka returns the seed brokers of a running Apache Kafka cluster:
// $PULSE_TEST_KAFKA, or a single KRaft node started for this test binary.
// Topics are created on first use with 4 partitions. Tests sharing it keep
// apart with Topic.
func Kafka(t testing.TB) []string {
	t.Helper()
	addrs := sharedKafka.get(t, "kafka", func() ([]string, error) {
		list := os.Getenv(EnvKafka)
		if list == "" {
			return nil, nil
		}
		seeds := strings.Split(list, ",")
		if err := kafkaReady(context.Background(), seeds); err != nil {
			return nil, fmt.Errorf("%s=%s does not answer: %w", EnvKafka, list, err)
		}
		return seeds, nil
	}, newKafka)
	if sharedKafka.srv != nil {
		return addrs[:1]
	}
	return addrs
}

// stopShared kills the servers this binary started and removes their files.
// Their data is thrown away, so there is nothing to stop gracefully for.
func stopShared() {
	for _, sh := range []*shared{&sharedRedis, &sharedClickHouse, &sharedKafka} {
		if sh.srv != nil {
			sh.srv.Kill()
		}
	}
	if sharedDirPath != "" {
		os.RemoveAll(sharedDirPath)
	}
}

// StartRedis starts a private redis-server for t, which keeps its data in an
// append-only file across Stop and Start. It is stopped when t ends.
func StartRedis(t testing.TB) *Server {
	t.Helper()
	return startPrivate(t, func(dir string) (*Server, error) { return newRedis(dir, true) })
}

// StartClickHouse starts a private clickhouse-server for t. It is stopped
// when t ends.
func StartClickHouse(t testing.TB) *Server {
	t.Helper()
	return startPrivate(t, newClickHouse)
}

// StartKafka starts a private single-node Kafka cluster for t. It is stopped
// when t ends.
func StartKafka(t testing.TB) *Server {
	t.Helper()
	return startPrivate(t, newKafka)
}

func startPrivate(t testing.TB, start func(dir string) (*Server, error)) *Server {
	t.Helper()
	s, err := start(t.TempDir())
	if err != nil {
		fatal(t, err)
	}
	t.Cleanup(func() { s.Kill() })
	return s
}

// StartShared starts Redis, ClickHouse and Kafka under dir, at the same time,
// for a whole test run. It returns the environment (KEY=value lines) that
// makes Redis, ClickHouse and Kafka in every test binary use them, and a func
// that kills them.
func StartShared(dir string) (env []string, servers []*Server, stop func(), err error) {
	starts := []struct {
		name  string
		start func(dir string) (*Server, error)
	}{
		{"redis", func(dir string) (*Server, error) { return newRedis(dir, false) }},
		{"clickhouse", newClickHouse},
		{"kafka", newKafka},
	}
	servers = make([]*Server, len(starts))
	errs := make([]error, len(starts))
	var wg sync.WaitGroup
	for i, s := range starts {
		wg.Go(func() {
			sub := dir + "/" + s.name
			if errs[i] = os.MkdirAll(sub, 0o755); errs[i] == nil {
				servers[i], errs[i] = s.start(sub)
			}
		})
	}
	wg.Wait()
	stop = func() {
		for _, s := range servers {
			if s != nil {
				s.Kill()
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		stop()
		return nil, nil, nil, err
	}
	env = []string{
		EnvRedis + "=" + servers[0].Addr(),
		EnvClickHouse + "=" + servers[1].Addr(),
		EnvClickHouseHTTP + "=" + servers[1].HTTPAddr(),
		EnvKafka + "=" + servers[2].Addr(),
	}
	return env, servers, stop, nil
}
