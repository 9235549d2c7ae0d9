package history

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// ErrNoLocalServer means no clickhouse-server binary is installed.
var ErrNoLocalServer = errors.New("clickhouse-server is not installed")

// LocalServer is a clickhouse-server that `pulse dev` runs as a child
// process, with its data under the dev data dir, listening on 127.0.0.1.
type LocalServer struct {
	cmd      *exec.Cmd
	done     chan struct{}
	Addr     string // native protocol, for clickhouse-go and clickhouse-client
	HTTPAddr string
	Dir      string
}

// StartLocal starts clickhouse-server with its data in dir, on 127.0.0.1
// at tcpPort (native) and httpPort, and waits until it answers. It returns
// ErrNoLocalServer when the binary is not on PATH.
func StartLocal(ctx context.Context, dir string, tcpPort, httpPort int) (*LocalServer, error) {
	bin, err := exec.LookPath("clickhouse-server")
	if err != nil {
		return nil, ErrNoLocalServer
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for _, sub := range []string{"data", "tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	for _, p := range []int{tcpPort, httpPort} {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return nil, fmt.Errorf("cannot start a local ClickHouse: port %d is in use (another clickhouse-server or pulse dev?)", p)
		}
		ln.Close()
	}
	inter, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := localConf{Dir: dir, TCP: tcpPort, HTTP: httpPort, Interserver: inter}
	for name, tmpl := range map[string]*template.Template{"config.xml": localConfig, "users.xml": localUsers} {
		var b strings.Builder
		if err := tmpl.Execute(&b, conf); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			return nil, err
		}
	}
	out, err := os.OpenFile(filepath.Join(dir, "clickhouse.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config-file="+filepath.Join(dir, "config.xml"))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	// Die with pulse dev, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("cannot start clickhouse-server: %w", err)
	}
	s := &LocalServer{cmd: cmd, done: make(chan struct{}), Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(tcpPort)), HTTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)), Dir: dir}
	go func() { _ = cmd.Wait(); out.Close(); close(s.done) }()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get("http://" + s.HTTPAddr + "/?query=SELECT%201")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("clickhouse-server exited at start; see %s", filepath.Join(dir, "clickhouse-server.err.log"))
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("clickhouse-server did not answer within 60s; see %s", filepath.Join(dir, "clickhouse-server.err.log"))
		}
	}
}

// Stop ends the server, waiting up to 30 s before killing it.
func (s *LocalServer) Stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

type localConf struct {
	Dir                    string
	TCP, HTTP, Interserver int
}

// localConfig keeps to settings that Debian's ClickHouse 18.16 and current
// releases both read.
var localConfig = template.Must(template.New("config.xml").Parse(`<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{{.Dir}}/clickhouse-server.log</log>
    <errorlog>{{.Dir}}/clickhouse-server.err.log</errorlog>
    <size>100M</size>
    <count>2</count>
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
  <max_concurrent_queries>100</max_concurrent_queries>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <mlock_executable>false</mlock_executable>
</yandex>
`))

var localUsers = template.Must(template.New("users.xml").Parse(`<?xml version="1.0"?>
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
