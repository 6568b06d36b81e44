package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// execTimeout bounds one iptables process. "-w" makes a legacy restore
// wait for the xtables lock with no limit of its own; a plugin must fail
// rather than hang its runtime.
const execTimeout = 60 * time.Second

// tools are the binaries of one family, found through PATH.
type tools struct {
	save, restore string
}

// lookTools finds the save and restore binaries of fam.
func lookTools(fam family) (tools, error) {
	var t tools
	var err error
	if t.restore, err = lookBin(fam.restoreBin()); err != nil {
		return tools{}, err
	}
	if t.save, err = lookBin(fam.saveBin()); err != nil {
		return tools{}, err
	}
	return t, nil
}

// lookBin finds name through PATH. The error names the binary and the
// PATH searched: a plugin's PATH is the runtime's, often not a shell's.
func lookBin(name string) (string, error) {
	p, err := exec.LookPath(name)
	if errors.Is(err, exec.ErrNotFound) {
		return "", fmt.Errorf("firewall: %s is not on PATH (%q): %w", name, os.Getenv("PATH"), err)
	}
	if err != nil {
		return "", fmt.Errorf("firewall: %s: %w", name, err)
	}
	return p, nil
}

// run executes bin with args and stdin, in the network namespace of the
// calling thread, and returns its standard output.
func (f *Firewall) run(bin, stdin string, args ...string) (string, error) {
	f.execs.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return "", fmt.Errorf("%s: %w", filepath.Base(bin), err)
		}
		return "", fmt.Errorf("%s: %w: %s", filepath.Base(bin), err, msg)
	}
	return stdout.String(), nil
}

// save reads the current rules of every table of the family.
func (f *Firewall) save(t tools) (state, error) {
	out, err := f.run(t.save, "")
	if err != nil {
		return nil, err
	}
	return parseSave(out), nil
}

// restore applies input without flushing what it does not name, waiting
// for the xtables lock where the backend has one.
func (f *Firewall) restore(t tools, input string) error {
	if _, err := f.run(t.restore, input, "--noflush", "-w"); err != nil {
		return withFailedLine(err, input)
	}
	return nil
}

// failedLine is compiled when a restore fails, not at every plugin's start.
var failedLine = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`line (\d+) failed|line (\d+):|Error occurred at line: (\d+)`)
})

// withFailedLine adds to a restore error the input line it names, which
// the message itself does not quote.
func withFailedLine(err error, input string) error {
	m := failedLine().FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	var n int
	for _, g := range m[1:] {
		if g != "" {
			n, _ = strconv.Atoi(g)
		}
	}
	lines := strings.Split(input, "\n")
	if n < 1 || n > len(lines) {
		return err
	}
	return fmt.Errorf("%w (input line %d: %s)", err, n, lines[n-1])
}
