package testenv

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/pulse-rt/pulse/internal/chserver"
)

// newClickHouse starts clickhouse-server in dir, listening on 127.0.0.1 only,
// with its data, logs and generated config.xml and users.xml in dir.
func newClickHouse(dir string) (*Server, error) {
	bin, err := lookPath("clickhouse-server")
	if err != nil {
		return nil, err
	}
	return launch(3, func(ports []int) (*Server, error) {
		conf, err := chserver.WriteConfig(dir, ports[0], ports[1], ports[2])
		if err != nil {
			return nil, err
		}
		return &Server{
			name:     "clickhouse",
			dir:      dir,
			addr:     hostPort(ports[0]),
			httpAddr: hostPort(ports[1]),
			argv:     []string{bin, "--config-file=" + conf},
			logs: []string{
				filepath.Join(dir, "clickhouse.out"),
				filepath.Join(dir, "clickhouse-server.err.log"),
			},
			ready: func(ctx context.Context, s *Server) error {
				out, err := clickhouseQuery(ctx, s.httpAddr, "SELECT 1")
				if err == nil && out != "1\n" {
					err = fmt.Errorf("SELECT 1 answered %q", out)
				}
				return err
			},
			wait:  60 * time.Second,
			grace: 60 * time.Second,
		}, nil
	})
}

// clickhouseHTTP keeps no idle connections: ClickHouse 18.16 waits for open
// connections when it stops, and testenv's own should never be among them.
var clickhouseHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// clickhouseQuery runs one statement over ClickHouse's HTTP interface and
// returns its output.
func clickhouseQuery(ctx context.Context, httpAddr, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+httpAddr+"/", strings.NewReader(sql))
	if err != nil {
		return "", err
	}
	resp, err := clickhouseHTTP.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("clickhouse %s: %s: %s", httpAddr, resp.Status, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}
