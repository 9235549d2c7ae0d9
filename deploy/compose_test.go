package deploy

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pulse-rt/pulse/config"
	"github.com/pulse-rt/pulse/internal/testenv"
)

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string         `yaml:"image"`
	Build       any            `yaml:"build"`
	PullPolicy  string         `yaml:"pull_policy"`
	Command     []string       `yaml:"command"`
	Volumes     []string       `yaml:"volumes"`
	Environment map[string]any `yaml:"environment"`
	Restart     string         `yaml:"restart"`
	Profiles    []string       `yaml:"profiles"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	readYAML(t, filepath.Join(root, "docker-compose.yml"), &c)
	if len(c.Services) == 0 {
		t.Fatal("docker-compose.yml: no services")
	}
	return c
}

// pulseImage is the image the service with `build: .` builds; the
// services running it are Pulse's.
func pulseImage(t *testing.T, c composeFile) string {
	t.Helper()
	var built []string
	for name, s := range c.Services {
		if s.Build != nil {
			built = append(built, name)
		}
	}
	if len(built) != 1 {
		t.Fatalf("docker-compose.yml: want one service that builds the Pulse image, got %v", built)
	}
	img := c.Services[built[0]].Image
	if img == "" {
		t.Fatalf("service %s builds an image with no name: the other services cannot run it", built[0])
	}
	return img
}

// pinned says whether an image reference names one version: a digest, or
// a tag that starts with a full version (major.minor.patch, "v" allowed).
var pinnedRe = regexp.MustCompile(`^[^@\s]+(@sha256:[0-9a-f]{64}|:v?\d+\.\d+\.\d+[0-9A-Za-z.+_-]*(@sha256:[0-9a-f]{64})?)$`)

func TestImagesPinned(t *testing.T) {
	c := loadCompose(t)
	own := pulseImage(t, c)
	for name, s := range c.Services {
		switch {
		case s.Image == "":
			t.Errorf("service %s: no image", name)
		case s.Image == own:
		case !pinnedRe.MatchString(s.Image):
			t.Errorf("service %s: image %q is not pinned to a version (want name:1.2.3 or a digest)", name, s.Image)
		}
	}
	stages := map[string]bool{}
	froms := 0
	for _, line := range dockerfile(t) {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.EqualFold(f[0], "FROM") {
			continue
		}
		froms++
		f = slices.DeleteFunc(f[1:], func(s string) bool { return strings.HasPrefix(s, "--") })
		if img := f[0]; !stages[strings.ToLower(img)] && !pinnedRe.MatchString(img) {
			t.Errorf("Dockerfile: FROM %s is not pinned to a version", img)
		}
		if len(f) == 3 && strings.EqualFold(f[1], "AS") {
			stages[strings.ToLower(f[2])] = true
		}
	}
	if froms == 0 {
		t.Error("Dockerfile: no FROM")
	}
}

// The pattern itself must refuse what it is for.
func TestPinnedPattern(t *testing.T) {
	f := func(img string, want bool) {
		t.Helper()
		if got := pinnedRe.MatchString(img); got != want {
			t.Errorf("pinned(%q) = %v, want %v", img, got, want)
		}
	}
	f("redis:7.4.6", true)
	f("prom/prometheus:v3.9.0", true)
	f("clickhouse/clickhouse-server:25.8.26.11", true)
	f("golang:1.26.8-bookworm", true)
	f("gcr.io/distroless/static-debian12@sha256:"+strings.Repeat("a", 64), true)
	f("redis:7", false)
	f("redis:7.4", false)
	f("redis", false)
	f("redis:latest", false)
	f("clickhouse/clickhouse-server:latest", false)
	f("gcr.io/distroless/static-debian12", false)
	f("golang:1.26", false)
}

// dockerfile returns the Dockerfile's instructions, continuation lines
// joined and comments dropped.
func dockerfile(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		lines = append(lines, cur+l)
		cur = ""
	}
	return lines
}

func TestDockerfileRunsAsUserWithPorts(t *testing.T) {
	var user string
	exposed := map[string]bool{}
	for _, l := range dockerfile(t) {
		f := strings.Fields(l)
		switch strings.ToUpper(f[0]) {
		case "USER":
			user = f[1]
		case "EXPOSE":
			for _, p := range f[1:] {
				exposed[strings.TrimSuffix(p, "/tcp")] = true
			}
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("Dockerfile: the final stage runs as %q, want a non-root USER", user)
	}
	// Every port a Pulse service listens on in the compose file is declared.
	c := loadCompose(t)
	for _, svc := range pulseServices(t, c) {
		if svc.port != "" && !exposed[svc.port] {
			t.Errorf("Dockerfile: EXPOSE lacks %s, where `pulse %s` listens", svc.port, svc.command)
		}
	}
}

func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimSuffix(l, "/"))
		}
	}
	// What `pulse dev`, `make build` and npm leave in a checkout.
	for _, path := range []string{"pulse-data", "bin", "node_modules", "ingest/testdata/compat/node_modules"} {
		if !slices.ContainsFunc(patterns, func(p string) bool { return ignores(p, path) }) {
			t.Errorf(".dockerignore: %s is sent to the build", path)
		}
	}
}

// ignores is .dockerignore's matching for the patterns used here: a glob
// from the context's root, or **/ for any depth.
func ignores(pattern, path string) bool {
	if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
		return ignores(rest, path) || strings.Contains(path, "/") && ignores(pattern, path[strings.Index(path, "/")+1:])
	}
	ok, _ := filepath.Match(pattern, path)
	return ok
}

// pulseService is one compose service that runs the Pulse image, as the
// container sees it.
type pulseService struct {
	name string
	composeService
	command string // pulse's command: ingest, stream...
	mounts  string // a directory holding the service's bind mounts at their container paths
	config  string // the config file's path under mounts
	cfg     *config.Config
	port    string // where it serves /metrics and /readyz
}

// pulseServices returns the compose file's Pulse services, their bind
// mounts laid out under a temporary directory as the container sees them.
func pulseServices(t *testing.T, c composeFile) []pulseService {
	t.Helper()
	own := pulseImage(t, c)
	var out []pulseService
	for name, s := range c.Services {
		if s.Image != own {
			continue
		}
		svc := pulseService{name: name, composeService: s, mounts: t.TempDir()}
		if len(s.Command) == 0 {
			t.Fatalf("service %s: no command (the image's default only prints help)", name)
		}
		svc.command = s.Command[0]
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			src, dst := parts[0], parts[1]
			if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
				continue // a named volume
			}
			abs, err := filepath.Abs(filepath.Join(root, src))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(abs); err != nil {
				t.Fatalf("service %s mounts %s: %v", name, src, err)
			}
			link := filepath.Join(svc.mounts, dst)
			if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(abs, link); err != nil {
				t.Fatal(err)
			}
		}
		i := slices.Index(s.Command, "-config")
		if i < 0 || i+1 >= len(s.Command) {
			t.Fatalf("service %s: command %v has no -config", name, s.Command)
		}
		svc.config = filepath.Join(svc.mounts, s.Command[i+1])
		cfg, err := config.Load(svc.config)
		if err != nil {
			t.Fatalf("service %s: config %s (as mounted): %v", name, s.Command[i+1], err)
		}
		svc.cfg = cfg
		listen := map[string]string{"ingest": cfg.Ingest.Listen, "scorer": cfg.Scorer.Listen, "stream": cfg.Stream.Listen}[svc.command]
		if j := slices.Index(s.Command, "-listen"); j >= 0 && j+1 < len(s.Command) {
			listen = s.Command[j+1]
		}
		if listen == "" {
			// TestComposePulseServices says so, after checking the command.
			out = append(out, svc)
			continue
		}
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			t.Fatalf("service %s: listen %q: %v", name, listen, err)
		}
		if host != "0.0.0.0" && host != "" && host != "::" {
			t.Errorf("service %s listens on %s: unreachable from the other containers (want 0.0.0.0:%s)", name, listen, port)
		}
		svc.port = port
		out = append(out, svc)
	}
	slices.SortFunc(out, func(a, b pulseService) int { return strings.Compare(a.name, b.name) })
	return out
}

// TestComposePulseServices checks each Pulse service as far as can be
// without Docker: its command is one the real binary has, with flags it
// takes; its config, as mounted, passes `pulse validate`; it is checked
// and scraped on the port it listens on; it restarts; it waits for the
// parts it needs.
func TestComposePulseServices(t *testing.T) {
	c := loadCompose(t)
	pulse := testenv.BuildPulse(t)
	own := pulseImage(t, c)
	svcs := pulseServices(t, c)
	if len(svcs) < 4 {
		t.Fatalf("only %d services run the Pulse image %s", len(svcs), own)
	}
	jobs := scrapeJobs(t)
	for _, svc := range svcs {
		t.Run(svc.name, func(t *testing.T) {
			// -h after the compose's flags: the command parses them, then
			// prints its usage and exits 0; an unknown command or flag exits 2.
			out, err := exec.Command(pulse, append(slices.Clone(svc.Command), "-h")...).CombinedOutput()
			if err != nil || strings.Contains(string(out), "unknown command") || strings.Contains(string(out), "not defined") {
				t.Errorf("pulse %s: not a command of the binary, or a flag it lacks (%v):\n%s", strings.Join(svc.Command, " "), err, out)
			}
			if out, err := exec.Command(pulse, "validate", "-config", svc.config).CombinedOutput(); err != nil {
				t.Errorf("pulse validate on %s's config as mounted: %v\n%s", svc.name, err, out)
			}
			if svc.port == "" {
				t.Fatalf("cannot tell where `pulse %s` listens: a listen key of its config, or -listen", svc.command)
			}
			if svc.Build == nil && svc.PullPolicy != "never" {
				t.Errorf("pull_policy %q: want never, the image is built here by the service that has build", svc.PullPolicy)
			}
			if svc.Healthcheck == nil {
				t.Error("no healthcheck")
			} else if hc := strings.Join(svc.Healthcheck.Test, " "); !strings.Contains(hc, "127.0.0.1:"+svc.port+"/readyz") {
				t.Errorf("healthcheck %q does not ask /readyz on port %s, where it listens", hc, svc.port)
			}
			want := fmt.Sprintf("%s:%s", svc.name, svc.port)
			switch job, ok := jobs["pulse-"+svc.name]; {
			case !ok && len(svc.Profiles) == 0:
				t.Errorf("deploy/prometheus/prometheus.yml: no job pulse-%s", svc.name)
			case ok && !slices.Contains(job, want):
				t.Errorf("deploy/prometheus/prometheus.yml: job pulse-%s scrapes %v, want %s", svc.name, job, want)
			}
			// Kafka, as every service needs it, and the online store for
			// the processes that read or write it: started and healthy first.
			needs := hostsOf(svc.cfg.Kafka.Brokers...)
			if svc.command == "stream" || svc.command == "scorer" {
				needs = append(needs, hostsOf(svc.cfg.Redis.Addr)...)
			}
			if svc.command == "history" {
				needs = append(needs, hostsOf(svc.cfg.ClickHouse.Addr)...)
			}
			for _, h := range needs {
				if d, ok := svc.DependsOn[h]; !ok || d.Condition != "service_healthy" {
					t.Errorf("depends_on lacks %s: {condition: service_healthy}", h)
				}
			}
		})
	}
}

func hostsOf(addrs ...string) []string {
	var out []string
	for _, a := range addrs {
		if h, _, err := net.SplitHostPort(a); err == nil {
			out = append(out, h)
		}
	}
	return out
}

// TestComposeServices checks what every service needs, Pulse's or not.
func TestComposeServices(t *testing.T) {
	c := loadCompose(t)
	for name, s := range c.Services {
		if s.Restart != "unless-stopped" && s.Restart != "always" && !strings.HasPrefix(s.Restart, "on-failure") {
			t.Errorf("service %s: restart %q, want unless-stopped", name, s.Restart)
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) == 0 {
			t.Errorf("service %s: no healthcheck", name)
		}
		for dep, d := range s.DependsOn {
			other, ok := c.Services[dep]
			switch {
			case !ok:
				t.Errorf("service %s depends on %s, which is not a service", name, dep)
			case d.Condition == "service_healthy" && other.Healthcheck == nil:
				t.Errorf("service %s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
		for _, v := range s.Volumes {
			src := strings.Split(v, ":")[0]
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			} else if _, ok := c.Volumes[src]; !ok {
				t.Errorf("service %s mounts volume %s, not declared under volumes", name, src)
			}
		}
	}
}

// TestComposeClickHouseUser: current ClickHouse images refuse network
// access to `default` without a password, so the compose file creates a
// user and Pulse's config must log in as it.
func TestComposeClickHouseUser(t *testing.T) {
	c := loadCompose(t)
	checked := 0
	for _, svc := range pulseServices(t, c) {
		ch := svc.cfg.ClickHouse
		hosts := hostsOf(ch.Addr)
		if len(hosts) == 0 {
			continue
		}
		server, ok := c.Services[hosts[0]]
		if !ok {
			t.Errorf("service %s: clickhouse.addr %s is not a compose service", svc.name, ch.Addr)
			continue
		}
		checked++
		env := func(k string) string { return fmt.Sprint(server.Environment[k]) }
		if ch.User == "" || ch.User == "default" {
			t.Errorf("service %s: clickhouse.user %q: the image refuses `default` over the network", svc.name, ch.User)
		}
		if env("CLICKHOUSE_USER") != ch.User || env("CLICKHOUSE_PASSWORD") != ch.Password {
			t.Errorf("service %s logs in as %s/%s, the ClickHouse service creates %s/%s", svc.name, ch.User, ch.Password, env("CLICKHOUSE_USER"), env("CLICKHOUSE_PASSWORD"))
		}
		if db := env("CLICKHOUSE_DB"); db != ch.Database {
			t.Errorf("service %s writes to database %s, the ClickHouse service creates %s", svc.name, ch.Database, db)
		}
	}
	if checked == 0 {
		t.Error("no Pulse service uses ClickHouse")
	}
}
