package webtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds the browser, failing (never skipping) without one.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PULSE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found: install it (apt-get install -y chromium, or scripts/install-test-deps.sh) or set PULSE_CHROMIUM to a Chrome binary")
	return ""
}

// artifactsDir is $PULSE_TEST_ARTIFACTS, else the test's temporary directory.
func artifactsDir(t *testing.T) string {
	if d := os.Getenv("PULSE_TEST_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err == nil {
			return d
		}
	}
	return t.TempDir()
}

// browser is one headless Chromium tab with a fresh profile.
type browser struct {
	t       *testing.T
	root    context.Context // the tab, for screenshots after ctx ran out
	ctx     context.Context // bounded: the whole test's browser time
	cancels []context.CancelFunc
	mu      sync.Mutex
	logs    []string
}

func newBrowser(t *testing.T, path string) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1000),
	}
	for _, f := range []string{"headless", "no-sandbox", "disable-gpu", "disable-dev-shm-usage", "no-first-run",
		"disable-background-networking", "disable-component-update", "disable-sync", "no-default-browser-check"} {
		opts = append(opts, chromedp.Flag(f, true))
	}
	b := &browser{t: t}
	actx, c1 := chromedp.NewExecAllocator(context.Background(), opts...)
	tab, c2 := chromedp.NewContext(actx, chromedp.WithLogf(func(f string, a ...any) {
		b.mu.Lock()
		b.logs = append(b.logs, fmt.Sprintf(f, a...))
		b.mu.Unlock()
	}))
	ctx, c3 := context.WithTimeout(tab, 50*time.Second)
	b.root, b.ctx, b.cancels = tab, ctx, []context.CancelFunc{c3, c2, c1}
	// Start the browser now, so a broken install fails here with its error.
	if err := chromedp.Do(ctx); err != nil {
		b.close()
		t.Fatalf("cannot start Chromium at %s: %v", path, err)
	}
	return b
}

// close saves a screenshot when the test failed (or always, with
// PULSE_TEST_ARTIFACTS set) and stops the browser.
func (b *browser) close() {
	if b.t.Failed() || os.Getenv("PULSE_TEST_ARTIFACTS") != "" {
		name := strings.ReplaceAll(b.t.Name(), "/", "_")
		if b.t.Failed() {
			name += "-failure"
		}
		b.screenshot(name + ".png")
		if b.t.Failed() {
			b.mu.Lock()
			b.t.Logf("browser log:\n%s", strings.Join(b.logs, "\n"))
			b.mu.Unlock()
		}
	}
	for _, c := range b.cancels {
		c()
	}
}

func (b *browser) screenshot(name string) {
	ctx, cancel := context.WithTimeout(b.root, 10*time.Second)
	defer cancel()
	chromedp.Run(ctx, chromedp.Evaluate[bool](`window.scrollTo(0, 0), true`))
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot failed: %v", err)
		return
	}
	p := filepath.Join(artifactsDir(b.t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Logf("screenshot not saved: %v", err)
		return
	}
	b.t.Logf("screenshot: %s", p)
}

func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) open(url string) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(".segment"))); err != nil {
		b.t.Fatalf("the dashboard at %s did not show segments: %v", url, err)
	}
}

// text is sel's textContent, "" when there is no such element.
func (b *browser) text(sel string) string {
	b.t.Helper()
	got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](fmt.Sprintf(`(function(){var e=document.querySelector(%q);return e?e.textContent:"";})()`, sel)))
	if err != nil {
		b.t.Fatalf("reading %s: %v", sel, err)
	}
	return strings.TrimSpace(got)
}

func (b *browser) wait(sel, what string, ok func(string) bool) {
	b.t.Helper()
	var got string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = b.text(sel); ok(got) {
			return
		}
	}
	b.t.Fatalf("%s: text %q, want %s", sel, got, what)
}

func (b *browser) waitText(sel, want string) {
	b.t.Helper()
	b.wait(sel, fmt.Sprintf("%q", want), func(s string) bool { return s == want })
}

// lookup asks the customer lookup for id, as a user would: the id typed
// in and the button clicked.
func (b *browser) lookup(id string) {
	b.t.Helper()
	b.settle()
	b.do(chromedp.SetValue(chromedp.CSS("#lookup-id"), id), chromedp.Click(chromedp.CSS("#lookup-form button")))
}

// settle waits, up to three seconds, for the page to stop scrolling: the
// lookup scrolls smoothly to its section, and a click computed mid-scroll
// lands beside the button.
func (b *browser) settle() {
	b.t.Helper()
	last := -1.0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		y, err := chromedp.Run(b.ctx, chromedp.Evaluate[float64](`window.scrollY`))
		if err != nil {
			b.t.Fatalf("reading the page's scroll position: %v", err)
		}
		if y == last {
			return
		}
		last = y
		time.Sleep(100 * time.Millisecond)
	}
}

// lookupUntil looks id up until sel contains want, asking again every
// second: the answer may change as the stream catches up, and a click
// during the page's smooth scroll can land beside the button on a loaded
// machine.
func (b *browser) lookupUntil(id, sel, want string) {
	b.t.Helper()
	b.lookup(id)
	last := time.Now()
	b.wait(sel, fmt.Sprintf("to contain %q", want), func(s string) bool {
		if strings.Contains(s, want) {
			return true
		}
		if time.Since(last) > time.Second {
			b.lookup(id)
			last = time.Now()
		}
		return false
	})
}

func (b *browser) waitContains(sel, want string) {
	b.t.Helper()
	b.wait(sel, fmt.Sprintf("to contain %q", want), func(s string) bool { return strings.Contains(s, want) })
}
