// Package config is pulse.yaml: the types every service reads, their
// defaults, and validation that reports every problem at once with its line.
//
// It sits at the bottom of Pulse with event: pure, no I/O beyond reading the
// file in Load. Feature expressions, segment rules and model files are
// checked by their own packages (aggregate, segment, model); package
// validate runs all of them for `pulse validate` and the stream's reload.
package config
