// Command cnmctl is the operator's view of cnmnet's state: the networks,
// endpoints and sandboxes the plugins keep, and the endpoint lifecycle
// outside the container lifecycle — reserve an endpoint before any
// container, remove one after, collect what expired, and check the
// store against the host. It works through the same core, store and
// lock as the plugins, never behind their back.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/store"
)

// Exit codes.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitFindings = 3  // check found inconsistencies it did not repair
	exitLocked   = 75 // the store stayed locked (EX_TEMPFAIL): try again
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	root := newRootCommand()
	root.SetArgs(args)
	err := root.Execute()
	var ue usageError
	var fe findingsError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "cnmctl:", err)
		return exitUsage
	case errors.As(err, &fe):
		return exitFindings
	case errors.Is(err, store.ErrLocked):
		fmt.Fprintln(os.Stderr, "cnmctl:", err)
		return exitLocked
	default:
		var te *types.Error
		if errors.As(err, &te) {
			fmt.Fprintf(os.Stderr, "cnmctl: %s (code %d)\n", te.Error(), te.Code)
		} else {
			fmt.Fprintln(os.Stderr, "cnmctl:", err)
		}
		return exitError
	}
}

// usageError is a command line that does not say what to do.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// findingsError reports that check found problems it left in place.
type findingsError struct{ n int }

func (e findingsError) Error() string { return fmt.Sprintf("%d problem(s) left", e.n) }
