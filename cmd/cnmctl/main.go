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
	o := &options{}
	root := newRootCommand(o)
	root.SetArgs(args)
	err := root.Execute()
	var fe findingsError
	if err == nil || errors.As(err, &fe) {
		if err != nil {
			return exitFindings // the findings are the output
		}
		return exitOK
	}
	var pe problemsError
	if errors.As(err, &pe) {
		fmt.Fprintln(os.Stderr, "cnmctl:", err) // the listing is the output
		return exitError
	}
	code, exit := classify(err)
	if o.output == "json" {
		// Scripts read stdout: the error is a CNI error object there.
		_ = printJSON(os.Stdout, &types.Error{Code: code, Msg: err.Error()})
	}
	if code != 0 && exit == exitError {
		fmt.Fprintf(os.Stderr, "cnmctl: %s (code %d)\n", err, code)
	} else {
		fmt.Fprintln(os.Stderr, "cnmctl:", err)
	}
	return exit
}

// classify gives an error its CNI code (0 when it has none) and cnmctl's
// exit code.
func classify(err error) (code uint, exit int) {
	var ue usageError
	var te *types.Error
	switch {
	case errors.As(err, &ue):
		return types.ErrInvalidEnvironmentVariables, exitUsage
	case errors.Is(err, store.ErrLocked):
		return types.ErrTryAgainLater, exitLocked
	case errors.Is(err, store.ErrNoStore):
		return types.ErrIOFailure, exitError
	case errors.As(err, &te):
		return te.Code, exitError
	default:
		return types.ErrInternal, exitError
	}
}

// usageError is a command line that does not say what to do.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// findingsError reports that check found problems it left in place.
type findingsError struct{ n int }

func (e findingsError) Error() string { return fmt.Sprintf("%d problem(s) left", e.n) }
