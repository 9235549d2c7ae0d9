package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// redisDatabases is how many logical databases testenv's Redis servers have,
// so that RedisDB can hand each test its own.
const redisDatabases = 1024

// newRedis starts redis-server in dir. A persistent server keeps its data
// across Stop and Start in an append-only file; a shared one keeps nothing.
func newRedis(dir string, persistent bool) (*Server, error) {
	bin, err := lookPath("redis-server")
	if err != nil {
		return nil, err
	}
	return launch(1, func(ports []int) (*Server, error) {
		aof := "no"
		if persistent {
			aof = "yes"
		}
		return &Server{
			name: "redis",
			dir:  dir,
			addr: hostPort(ports[0]),
			argv: []string{bin,
				"--port", strconv.Itoa(ports[0]),
				"--bind", "127.0.0.1",
				"--dir", dir,
				"--save", "",
				"--appendonly", aof,
				"--databases", strconv.Itoa(redisDatabases),
				"--logfile", "",
				// Tests may turn active expiry off (DEBUG SET-ACTIVE-EXPIRE).
				"--enable-debug-command", "local",
			},
			logs:  []string{filepath.Join(dir, "redis.log")},
			ready: func(ctx context.Context, s *Server) error { return redisPing(ctx, s.addr) },
			wait:  30 * time.Second,
			grace: 30 * time.Second,
		}, nil
	})
}

func redisPing(ctx context.Context, addr string) error {
	r, err := redisDo(ctx, addr, []string{"PING"})
	if err != nil {
		return err
	}
	if r[0] != "PONG" {
		return fmt.Errorf("redis answered PING with %v", r[0])
	}
	return nil
}

// redisDo sends commands to addr on one connection and returns their replies.
// It is the least of Redis's protocol that testenv needs, so testenv does not
// depend on a client library.
func redisDo(ctx context.Context, addr string, cmds ...[]string) ([]any, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	var b strings.Builder
	for _, args := range cmds {
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	br := bufio.NewReader(conn)
	replies := make([]any, len(cmds))
	for i := range cmds {
		if replies[i], err = readRESP(br); err != nil {
			return nil, fmt.Errorf("redis %s: %w", cmds[i][0], err)
		}
	}
	return replies, nil
}

// readRESP reads one reply: a string, an int64, nil or a []any.
func readRESP(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, errors.New(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		arr := make([]any, n)
		for i := range arr {
			if arr[i], err = readRESP(r); err != nil {
				return nil, err
			}
		}
		return arr, nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}
