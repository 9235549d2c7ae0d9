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
	go func() { time.Sleep(30 * time.Millisecond); close(ch) }()
	r := trace.StartRegion(ctx, "work")
	<-ch
	r.End()
	trace.WithRegion(ctx, "other", func() { spin(time.Millisecond) })
	trace.Stop()

	regions, _, err := read(&buf, "work", "")
	if err != nil {
		t.Fatal(err)
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

func spin(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}
