// Package proccpu reads the CPU time of other processes on this machine
// from /proc, and finds the process listening on a port, so that a load
// test or a benchmark can report a server's CPU (the broker, redis-server,
// a peer) beside its own. Linux only; elsewhere its functions return an
// error.
package proccpu
