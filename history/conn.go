package history

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/pulse-rt/pulse/config"
)

// ErrDisabled is returned by Open when the config names no ClickHouse.
var ErrDisabled = errors.New("history is off: clickhouse.addr is not set")

// Open connects to the configured ClickHouse over the native protocol. The
// connection is a pool, safe for concurrent use; it redials after the
// server comes back. The database need not exist yet (Migrate creates it).
func Open(c config.ClickHouse) (driver.Conn, error) {
	if c.Addr == "" {
		return nil, ErrDisabled
	}
	user := c.User
	if user == "" {
		user = "default"
	}
	// LZ4 saves a network's bandwidth, but over loopback it only costs
	// CPU: reading the 10M events of a replay took the server 3.6 CPU-s
	// with it and 2.4 without, the Go side 2.8 and 3.0 (it reads more
	// bytes through its buffer), so a machine running both does a sixth
	// less work without it.
	var compression *clickhouse.Compression
	if !loopback(c.Addr) {
		compression = &clickhouse.Compression{Method: clickhouse.CompressionLZ4}
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: []string{c.Addr},
		// The server's default database, not ours: queries name their
		// database, and ours may not exist before Migrate.
		Auth:            clickhouse.Auth{Database: "default", Username: user, Password: c.Password},
		DialTimeout:     5 * time.Second,
		ReadTimeout:     5 * time.Minute,
		MaxOpenConns:    8,
		MaxIdleConns:    4,
		ConnMaxLifetime: time.Hour,
		Compression:     compression,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot open clickhouse %s: %w", c.Addr, err)
	}
	return conn, nil
}

// loopback says whether addr (host:port) names this machine.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Ping checks that ClickHouse answers.
func Ping(ctx context.Context, conn driver.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("clickhouse unreachable: %w", err)
	}
	return nil
}
