package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Server is a server process that testenv started. Its ports and data
// directory stay the same across Stop and Start, so a test can take it down
// mid-load and bring it back with its data.
//
// Its methods are safe for concurrent use; they return errors rather than
// failing a test so they can be called from any goroutine.
type Server struct {
	name     string // "redis", "clickhouse" or "kafka"
	dir      string
	addr     string
	httpAddr string
	argv     []string
	logs     []string // files whose tails explain a failed start; logs[0] takes stdout and stderr
	ready    func(ctx context.Context, s *Server) error
	wait     time.Duration // how long Start waits for ready
	grace    time.Duration // how long Stop waits after SIGTERM before SIGKILL

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	startup time.Duration
	logFrom int64 // logs[0]'s size when the last Start began
}

// Name is "redis", "clickhouse" or "kafka".
func (s *Server) Name() string { return s.name }

// Addr is the address clients dial: Redis's port, ClickHouse's native
// protocol port, or the Kafka broker's bootstrap address.
func (s *Server) Addr() string { return s.addr }

// HTTPAddr is ClickHouse's HTTP interface, "" for other servers.
func (s *Server) HTTPAddr() string { return s.httpAddr }

// Dir holds the server's configuration, data and log files.
func (s *Server) Dir() string { return s.dir }

// StartupTime is how long the last Start took until the server answered.
func (s *Server) StartupTime() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startup
}

// Start starts the server, on its ports and with its data, and waits until it
// answers. Starting a running server does nothing.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runningLocked() {
		return nil
	}
	begin := time.Now()
	logf, err := os.OpenFile(s.logs[0], os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("cannot open %s log: %w", s.name, err)
	}
	s.logFrom = 0
	if fi, err := logf.Stat(); err == nil {
		s.logFrom = fi.Size()
	}
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	err = spawn(cmd)
	logf.Close() // the child has its own copy
	if err != nil {
		return fmt.Errorf("cannot start %s: %w", s.name, err)
	}
	exited := make(chan struct{})
	s.cmd, s.exited, s.waitErr = cmd, exited, nil
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.waitErr = err
		s.mu.Unlock()
		close(exited)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), s.wait)
	defer cancel()
	for {
		err := s.ready(ctx, s)
		if err == nil {
			s.startup = time.Since(begin)
			return nil
		}
		if errors.Is(err, errExited) {
			// The server gave up though its process is still there.
			s.signalLocked(syscall.SIGKILL)
			s.mu.Unlock()
			<-exited
			s.mu.Lock()
			return fmt.Errorf("%s: %w%s", s.name, err, s.tail())
		}
		select {
		case <-exited:
			s.mu.Unlock()
			<-exited
			s.mu.Lock()
			return fmt.Errorf("%w: %s (%v)%s", errExited, s.name, s.waitErr, s.tail())
		case <-ctx.Done():
			s.signalLocked(syscall.SIGKILL)
			s.mu.Unlock()
			<-exited
			s.mu.Lock()
			return fmt.Errorf("%s at %s not ready after %v: %v%s", s.name, s.addr, s.wait, err, s.tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop stops the server gracefully (SIGTERM), killing it if it has not exited
// within its grace period. Stopping a stopped server does nothing.
//
// ClickHouse 18.16 takes about 12s to stop while a client holds a connection
// open (2s otherwise); Kill is the quick way to take a server away.
func (s *Server) Stop() error {
	return s.halt(syscall.SIGTERM, s.grace)
}

// Kill kills the server at once (SIGKILL), as a crash or power cut would.
func (s *Server) Kill() error {
	return s.halt(syscall.SIGKILL, 10*time.Second)
}

func (s *Server) halt(sig syscall.Signal, grace time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.runningLocked() {
		return nil
	}
	exited, pid := s.exited, s.cmd.Process.Pid
	s.signalLocked(sig)
	s.mu.Unlock()
	defer s.mu.Lock()
	select {
	case <-exited:
		return nil
	case <-time.After(grace):
	}
	s.mu.Lock()
	s.signalLocked(syscall.SIGKILL)
	s.mu.Unlock()
	select {
	case <-exited:
		return fmt.Errorf("%s ignored %v for %v and was killed", s.name, sig, grace)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", s.name, pid)
	}
}

func (s *Server) runningLocked() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// signalLocked signals the server's process group, which holds the server
// and anything it forked.
func (s *Server) signalLocked(sig syscall.Signal) {
	if s.cmd != nil && s.cmd.Process != nil {
		if syscall.Kill(-s.cmd.Process.Pid, sig) != nil {
			s.cmd.Process.Signal(sig)
		}
	}
}

// tail returns the ends of the server's logs, to put in an error.
func (s *Server) tail() string {
	var b strings.Builder
	for _, p := range s.logs {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		const max = 3000
		if fi, err := f.Stat(); err == nil && fi.Size() > max {
			f.Seek(fi.Size()-max, io.SeekStart)
		}
		data, _ := io.ReadAll(f)
		f.Close()
		if len(strings.TrimSpace(string(data))) > 0 {
			fmt.Fprintf(&b, "\n--- tail of %s ---\n%s", p, strings.TrimRight(string(data), "\n"))
		}
	}
	return b.String()
}

var errExited = errors.New("exited before it was ready")

// loggedSinceStart says whether logs[0] holds text written since the last
// Start began. Start's ready function calls it with s.mu held.
func (s *Server) loggedSinceStart(text string) bool {
	f, err := os.Open(s.logs[0])
	if err != nil {
		return false
	}
	defer f.Close()
	if _, err := f.Seek(s.logFrom, io.SeekStart); err != nil {
		return false
	}
	data, _ := io.ReadAll(f)
	return strings.Contains(string(data), text)
}

// launch configures and starts a server on fresh free ports, trying new ports
// when the server exits at once, since another process may have taken a port
// between freePorts and the server binding it.
func launch(nports int, configure func(ports []int) (*Server, error)) (*Server, error) {
	var err error
	for range 3 {
		var ports []int
		if ports, err = freePorts(nports); err != nil {
			return nil, err
		}
		var s *Server
		if s, err = configure(ports); err != nil {
			return nil, err
		}
		if err = s.Start(); err == nil {
			return s, nil
		}
		if !errors.Is(err, errExited) {
			return nil, err
		}
	}
	return nil, err
}

// freePorts returns n distinct loopback ports that were free a moment ago,
// outside the ephemeral range (pickPort).
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		p, err := pickPort()
		if err != nil {
			return nil, err
		}
		ports = append(ports, p)
	}
	return ports, nil
}

func hostPort(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

type spawnCall struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawnCh   chan spawnCall
)

// spawn starts cmd from one OS thread that never exits. Linux sends the
// parent-death signal when the thread that forked the child dies, not the
// process, and the Go runtime may retire threads; a thread locked by a
// goroutine that never returns lives as long as the process.
func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnCall)
		go func() {
			runtime.LockOSThread()
			for c := range spawnCh {
				c.done <- c.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawnCh <- spawnCall{cmd, done}
	return <-done
}

// lookPath finds a server's binary, or says how to install it.
func lookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s is not on PATH: %w", name, errMissing)
	}
	return p, nil
}

var errMissing = errors.New("run `make test-deps` (scripts/install-test-deps.sh) to install the test servers")
