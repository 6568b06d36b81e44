// Command tracewrap stands in for another executable to count the
// processes a CNI ADD or DEL runs. The benchmark harness hard-links it
// into tracing directories under the names of the binaries it watches
// (CNI plugins, iptables tools); next to each link, .real/<name> is a
// symlink to the real binary. Run under a name, it runs the real binary
// as its child (same arguments, argv[0], environment and standard
// streams), waits for it, appends one line to the file named by
// $CNMBENCH_TRACE_LOG and exits with the child's status:
//
//	<name>\t<parent pid>\t<wall µs>\t<child VmHWM KiB>\t<exit code>
//
// The child's peak RSS is its own (see package hwm), not the wrapper's.
//
// It is not a test and is built only by the harness.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cnmnet/cnmnet/test/bench/internal/hwm"
)

func main() {
	self := os.Args[0]
	if !filepath.IsAbs(self) {
		if p, err := os.Executable(); err == nil {
			self = p
		}
	}
	name := filepath.Base(self)
	real := filepath.Join(filepath.Dir(self), ".real", name)

	cmd := exec.Command(real, os.Args[1:]...)
	cmd.Args[0] = name // multi-call binaries (xtables-nft-multi) dispatch on it
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The child gets the signals the caller sends; the wrapper ignores them.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)

	start := time.Now()
	peak, err := hwm.Run(cmd)
	wall := time.Since(start)
	code := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
		if code < 0 {
			code = 128 + 9
		}
	default:
		fmt.Fprintf(os.Stderr, "tracewrap: %s: %v\n", name, err)
		code = 127
	}
	if log := os.Getenv("CNMBENCH_TRACE_LOG"); log != "" {
		line := fmt.Sprintf("%s\t%d\t%d\t%d\t%d\n", name, os.Getppid(), wall.Microseconds(), peak, code)
		if f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
			_, _ = f.WriteString(line) // one write: lines of concurrent wrappers do not mix
			_ = f.Close()
		}
	}
	os.Exit(code)
}
