package testenv

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// newClickHouse starts clickhouse-server in dir, listening on 127.0.0.1 only,
// with its data, logs and generated config.xml and users.xml in dir.
func newClickHouse(dir string) (*Server, error) {
	bin, err := lookPath("clickhouse-server")
	if err != nil {
		return nil, err
	}
	return launch(3, func(ports []int) (*Server, error) {
		for _, sub := range []string{"data", "tmp", "user_files", "format_schemas"} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
				return nil, err
			}
		}
		conf := clickhouseConf{Dir: dir, TCP: ports[0], HTTP: ports[1], Interserver: ports[2]}
		for name, tmpl := range map[string]*template.Template{"config.xml": clickhouseConfig, "users.xml": clickhouseUsers} {
			var b strings.Builder
			if err := tmpl.Execute(&b, conf); err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
				return nil, err
			}
		}
		return &Server{
			name:     "clickhouse",
			dir:      dir,
			addr:     hostPort(conf.TCP),
			httpAddr: hostPort(conf.HTTP),
			argv:     []string{bin, "--config-file=" + filepath.Join(dir, "config.xml")},
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

type clickhouseConf struct {
	Dir                    string
	TCP, HTTP, Interserver int
}

// clickhouseConfig keeps to settings that Debian's ClickHouse 18.16 and
// current releases both read; each server listens on its own ports only.
var clickhouseConfig = template.Must(template.New("config.xml").Parse(`<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{{.Dir}}/clickhouse-server.log</log>
    <errorlog>{{.Dir}}/clickhouse-server.err.log</errorlog>
    <size>100M</size>
    <count>1</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{{.TCP}}</tcp_port>
  <http_port>{{.HTTP}}</http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <interserver_http_port>{{.Interserver}}</interserver_http_port>
  <path>{{.Dir}}/data/</path>
  <tmp_path>{{.Dir}}/tmp/</tmp_path>
  <user_files_path>{{.Dir}}/user_files/</user_files_path>
  <format_schema_path>{{.Dir}}/format_schemas/</format_schema_path>
  <users_config>{{.Dir}}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <max_concurrent_queries>200</max_concurrent_queries>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <mlock_executable>false</mlock_executable>
</yandex>
`))

var clickhouseUsers = template.Must(template.New("users.xml").Parse(`<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>4000000000</max_memory_usage>
      <load_balancing>random</load_balancing>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries>
        <errors>0</errors>
        <result_rows>0</result_rows>
        <read_rows>0</read_rows>
        <execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
`))

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
