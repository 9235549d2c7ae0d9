package history

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pulse-rt/pulse/internal/chserver"
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
	if _, err := chserver.WriteConfig(dir, tcpPort, httpPort, inter); err != nil {
		return nil, err
	}
	out, err := os.OpenFile(filepath.Join(dir, "clickhouse.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config-file="+filepath.Join(dir, "config.xml"))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	// Die with pulse dev, however it ends; but in a process group of its
	// own, so that Ctrl-C at the terminal (SIGINT to the foreground group)
	// reaches pulse dev alone, which stops the server last, after the
	// history writer has flushed into it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
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
			log := filepath.Join(dir, "clickhouse-server.err.log")
			return nil, fmt.Errorf("clickhouse-server exited at start; see %s, which ends: %s", log, logTail(log, 600))
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

// logTail is the last n bytes of the log at path, one line, for an error
// that names the log (a test's temporary directory is gone by the time
// anyone reads it).
func logTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return strings.Join(strings.Fields(string(b)), " ")
}
