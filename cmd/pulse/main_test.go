package main

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// `pulse help` names every command and every load test.
func TestUsageListsEveryCommand(t *testing.T) {
	for name := range commands {
		if !strings.Contains(usage, "pulse "+name+" ") {
			t.Errorf("usage does not list pulse %s", name)
		}
	}
	for name := range loadtests {
		if !strings.Contains(usage, "pulse loadtest "+name+" ") && !strings.Contains(usage, "pulse loadtest "+name+"\n") {
			t.Errorf("usage does not list pulse loadtest %s", name)
		}
	}
}

// runBin runs the pulse binary bin in dir ("" = here) with args: its exit
// code and its output (stdout and stderr together).
func runBin(t *testing.T, bin, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}
