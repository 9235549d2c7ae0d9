package main

import (
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
