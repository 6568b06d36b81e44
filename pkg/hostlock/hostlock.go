package hostlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// poll is how often a waiter tries again. The steps it guards take a few
// milliseconds; a blocking flock could not be bounded without a thread
// left waiting.
const poll = 2 * time.Millisecond

// Acquire takes the exclusive lock of the file at path, made (with its
// directory) if missing, waiting at most wait for another process, and
// returns its release. what names the lock in errors. A process must not
// take a lock it holds: a second flock of the same file blocks too.
func Acquire(path, what string, wait time.Duration) (release func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("%s lock: %w", what, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s lock: %w", what, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// Closing the file releases the lock.
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("%s lock %s: %w", what, path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%s lock %s: still held by another process after %s", what, path, wait)
		}
		time.Sleep(poll)
	}
}
