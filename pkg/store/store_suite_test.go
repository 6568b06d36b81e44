package store_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/cnmnet/cnmnet/pkg/store"
)

// The test binary doubles as the child process of the cross-process
// specs: when childModeEnv is set, TestMain runs runChild instead of the
// suite.
const (
	childModeEnv = "CNMNET_STORE_TEST_CHILD"
	childDirEnv  = "CNMNET_STORE_TEST_DIR"
)

// Child modes.
const (
	// modeHold opens the store, reports "ready" from inside a
	// transaction, and holds it (the transaction, so the lock) until its
	// standard input is closed.
	modeHold = "hold"
	// modeWrite opens the store, reports "ready", and commits one
	// transaction after another until it is killed (see commitNext).
	modeWrite = "write"
	// modeOpen opens the store once, reads every key, and reports the
	// outcome: "ok <number of keys>", or "error <message>".
	modeOpen = "open"
	// modeRace reports "ready", waits for its standard input to be closed,
	// then opens the store, puts the key named by childKeyEnv, closes it,
	// and reports "ok" or "error <message>".
	modeRace = "race"
)

const childKeyEnv = "CNMNET_STORE_TEST_KEY"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childModeEnv); mode != "" {
		os.Exit(runChild(mode, os.Getenv(childDirEnv)))
	}
	os.Exit(m.Run())
}

func TestStore(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Store Suite")
}

func runChild(mode, dir string) int {
	if mode == modeRace {
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
		s, err := store.Open(dir, store.Options{LockWait: 10 * time.Second})
		if err == nil {
			key := os.Getenv(childKeyEnv)
			err = errors.Join(s.Update(func(tx store.Tx) error { return tx.Put(key, []byte("x")) }), s.Close())
		}
		report(err)
		return 0
	}
	s, err := store.Open(dir, store.Options{LockWait: 5 * time.Second})
	if mode == modeOpen {
		n := 0
		if err == nil {
			err = s.View(func(tx store.Tx) error {
				return tx.Scan("", func(string, []byte) error { n++; return nil })
			})
			s.Close()
		}
		if err == nil {
			fmt.Println("ok", n)
		} else {
			report(err)
		}
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		return 2
	}
	switch mode {
	case modeHold:
		err := s.Update(func(store.Tx) error {
			fmt.Println("ready")
			_, _ = io.Copy(io.Discard, os.Stdin)
			return nil
		})
		if err := errors.Join(err, s.Close()); err != nil {
			fmt.Fprintln(os.Stderr, "child: close:", err)
			return 2
		}
		return 0
	case modeWrite:
		fmt.Println("ready")
		for {
			if err := s.Update(commitNext); err != nil {
				fmt.Fprintln(os.Stderr, "child: update:", err)
				return 2
			}
		}
	default:
		fmt.Fprintln(os.Stderr, "child: unknown mode", mode)
		return 2
	}
}

func report(err error) {
	if err != nil {
		fmt.Println("error", strings.ReplaceAll(err.Error(), "\n", " "))
	} else {
		fmt.Println("ok")
	}
}

// The writer's transactions: the n-th one (counting from 0) writes key
// seqKey(n) with value seqValue(n) and sets countKey to n+1. A store in
// which every committed transaction is whole therefore holds exactly the
// keys seqKey(0)..seqKey(count-1), each with its value.
const countKey = "count"

func seqKey(n int) string { return fmt.Sprintf("k%06d", n) }

// seqValue is a few hundred bytes to a few KiB, so that transactions
// split and grow pages rather than all landing in one.
func seqValue(n int) []byte {
	head := strconv.Itoa(n) + "|"
	return []byte(head + strings.Repeat(string(rune('a'+n%26)), 200+(n%13)*250))
}

func readCount(tx store.Tx) (int, error) {
	v, err := tx.Get(countKey)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(v))
}

func commitNext(tx store.Tx) error {
	n, err := readCount(tx)
	if err != nil {
		return err
	}
	if err := tx.Put(seqKey(n), seqValue(n)); err != nil {
		return err
	}
	return tx.Put(countKey, []byte(strconv.Itoa(n+1)))
}

// child is a running child process of the test binary.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // lines of standard output; closed at EOF
	stderr *bytes.Buffer
	done   bool
}

// startChild runs the test binary in the given child mode on dir, with
// env added to its environment. The child is killed when the spec ends,
// if it is still running.
func startChild(mode, dir string, env ...string) *child {
	GinkgoHelper()
	exe, err := os.Executable()
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childModeEnv+"="+mode, childDirEnv+"="+dir)
	cmd.Env = append(cmd.Env, env...)
	c := &child{cmd: cmd, lines: make(chan string, 16), stderr: &bytes.Buffer{}}
	cmd.Stderr = c.stderr
	c.stdin, err = cmd.StdinPipe()
	Expect(err).NotTo(HaveOccurred())
	stdout, err := cmd.StdoutPipe()
	Expect(err).NotTo(HaveOccurred())
	Expect(cmd.Start()).To(Succeed())
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	DeferCleanup(func() {
		if !c.done {
			_ = c.cmd.Process.Kill()
			c.wait()
		}
	})
	return c
}

// nextLine returns the child's next line of output, failing the spec if
// none comes within a few seconds.
func (c *child) nextLine() string {
	GinkgoHelper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			c.wait()
			Fail(fmt.Sprintf("child exited without output (%v); stderr:\n%s", c.cmd.ProcessState, c.stderr))
		}
		return l
	case <-time.After(10 * time.Second):
		Fail(fmt.Sprintf("no output from child within 10s; stderr so far:\n%s", c.stderr))
	}
	return ""
}

func (c *child) waitReady() {
	GinkgoHelper()
	Expect(c.nextLine()).To(Equal("ready"), "child stderr:\n%s", c.stderr)
}

// wait reaps the child, releasing everything it held.
func (c *child) wait() *os.ProcessState {
	if !c.done {
		_ = c.cmd.Wait()
		c.done = true
	}
	return c.cmd.ProcessState
}

// kill sends SIGKILL and reaps the child; the spec fails if the child had
// already ended on its own.
func (c *child) kill() {
	GinkgoHelper()
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	ws := c.wait().Sys().(syscall.WaitStatus)
	Expect(ws.Signaled() && ws.Signal() == syscall.SIGKILL).To(BeTrue(),
		"child ended before it was killed: %v; stderr:\n%s", c.cmd.ProcessState, c.stderr)
}

// fileDigest is the SHA-256 of the file at path.
func fileDigest(path string) [sha256.Size]byte {
	GinkgoHelper()
	b, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	return sha256.Sum256(b)
}

// openStore opens a store in dir, closed when the spec ends.
func openStore(dir string) *store.FileStore {
	GinkgoHelper()
	s, err := store.Open(dir, store.Options{LockWait: 2 * time.Second})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { _ = s.Close() })
	return s
}
