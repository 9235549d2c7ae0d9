// Command testservers starts one Redis, ClickHouse and Kafka for a whole test
// run, so that every test binary shares them instead of starting its own.
//
//	testservers [-dir DIR] -- go test ./...
//
// runs the command with PULSE_TEST_* in its environment (see testenv), then
// stops the servers and exits with the command's status. Without a command it
// writes that environment to -env-file and serves until SIGINT or SIGTERM.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/pulse-rt/pulse/internal/testenv"
)

func main() {
	os.Exit(run())
}

func run() int {
	dir := flag.String("dir", "", "directory for the servers' data and logs (default: a new temporary directory, removed at exit)")
	envFile := flag.String("env-file", "", "without a command: write the PULSE_TEST_* environment here, one KEY=value a line")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: testservers [-dir DIR] -- command [args...]\n       testservers [-dir DIR] -env-file FILE")
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 && *envFile == "" {
		flag.Usage()
		return 2
	}

	// Catch signals from the start: a ^C while Kafka starts must still stop
	// what has started.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)

	if *dir == "" {
		d, err := os.MkdirTemp("", "pulse-testservers-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "testservers:", err)
			return 1
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	env, servers, stop, err := testenv.StartShared(*dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testservers: %v\n", err)
		return 1
	}
	defer stop()
	for _, s := range servers {
		extra := ""
		if s.HTTPAddr() != "" {
			extra = " http " + s.HTTPAddr()
		}
		fmt.Fprintf(os.Stderr, "testservers: %-10s %s%s ready in %v\n", s.Name(), s.Addr(), extra, s.StartupTime().Round(1e6))
	}

	if len(args) == 0 {
		if err := os.WriteFile(*envFile, []byte(strings.Join(env, "\n")+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "testservers:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "testservers: environment in %s; serving until SIGINT or SIGTERM\n", *envFile)
		<-sigs
		return 0
	}

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "testservers:", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			// The command shares our process group and got the terminal's
			// signal too; pass on a SIGTERM sent to us alone.
			cmd.Process.Signal(sig)
		case err := <-done:
			var exit *exec.ExitError
			switch {
			case err == nil:
				return 0
			case errors.As(err, &exit) && exit.ExitCode() > 0:
				return exit.ExitCode()
			default:
				fmt.Fprintln(os.Stderr, "testservers:", err)
				return 1
			}
		}
	}
}
