package main

import (
	"bytes"
	"context"
	"runtime/trace"
	"strings"
	"testing"
	"time"
)

// TestBreakdown traces regions that run, and one that waits on a channel
// for a long time, and checks that the slowest region's time is the
// channel wait, named.
func TestBreakdown(t *testing.T) {
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 200 {
		r := trace.StartRegion(ctx, "work")
		spin(50 * time.Microsecond)
		r.End()
	}
	ch := make(chan struct{})
	done := make(chan struct{})
	go blocker(ch, done)
	go func() { time.Sleep(30 * time.Millisecond); close(ch) }()
	r := trace.StartRegion(ctx, "work")
	<-ch
	r.End()
	trace.WithRegion(ctx, "other", func() { spin(time.Millisecond) })
	<-done
	trace.Stop()

	regions, lives, err := read(bytes.NewReader(buf.Bytes()), "work", "traceslow.blocker")
	if err != nil {
		t.Fatal(err)
	}
	// -goroutines: blocker's whole life is mostly its wait on ch.
	if len(lives) != 1 {
		t.Fatalf("%d goroutines in blocker, want 1", len(lives))
	}
	var lb strings.Builder
	breakdown(&lb, "blocker", lives)
	if line := strings.SplitN(lb.String(), "\n", 4)[2]; !strings.Contains(line, "waiting: chan receive in traceslow.blocker") {
		t.Errorf("blocker's first line is %q, want its channel wait:\n%s", line, lb.String())
	}
	if len(regions) != 201 {
		t.Fatalf("%d regions, want 201", len(regions))
	}
	var out strings.Builder
	report(&out, "work", regions)
	t.Log(out.String())
	slow := out.String()[strings.Index(out.String(), "slowest 1%"):]
	first := strings.SplitN(slow, "\n", 3)[1]
	if !strings.Contains(first, "waiting: chan receive") {
		t.Errorf("the slowest regions' first line is %q, want the channel wait", first)
	}
	all := out.String()[:strings.Index(out.String(), "slowest 1%")]
	if !strings.Contains(all, "running") {
		t.Error("no running time among all the regions")
	}
}

// blocker waits for ch, then says so on done.
func blocker(ch, done chan struct{}) {
	<-ch
	close(done)
}

func spin(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}
