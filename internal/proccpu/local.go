package proccpu

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// LocalServer is the CPU time of the server at addr (host:port) when it
// runs on this machine (a loopback or "localhost" host): the process
// listening on its port. read is nil, with a nil error, when addr is on
// another machine, and nil with the reason when it is local but cannot be
// read (not visible here, or not Linux). self is true when the listener
// is this process (kfake), whose CPU the caller counts already.
func LocalServer(addr string) (read func() (time.Duration, error), self bool, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, false, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, false, nil
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return nil, false, fmt.Errorf("port of %s: %w", addr, err)
	}
	pid, err := Listening(n)
	if err != nil {
		return nil, false, err
	}
	return func() (time.Duration, error) { return Of(pid) }, pid == os.Getpid(), nil
}
