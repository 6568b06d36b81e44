package store

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// LockName is the lock file beside the store. bbolt locks the store file
// itself too, but by polling every 50 ms: under a burst of plugin
// processes the lock would sit free between polls. A blocking flock on
// this file hands it over the moment it is released.
const LockName = "state.lock"

// lockFile holds the exclusive lock of a store directory.
type lockFile struct{ f *os.File }

// acquire takes the directory's lock, waiting at most wait.
func acquire(dir string, wait time.Duration) (*lockFile, error) {
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
		return &lockFile{f: f}, nil
	}
	// Block in a goroutine so that the wait can be bounded; one that is
	// given up on lets go of the lock as soon as it gets it.
	var abandoned atomic.Bool
	got := make(chan error, 1)
	go func() {
		err := flockRetry(f)
		if abandoned.Load() {
			f.Close()
			return
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return &lockFile{f: f}, nil
	case <-time.After(wait):
		abandoned.Store(true)
		// The goroutine may have got the lock just now: take it back.
		select {
		case err := <-got:
			if err == nil {
				return &lockFile{f: f}, nil
			}
		default:
		}
		return nil, fmt.Errorf("%w: waited %s for %s", ErrLocked, wait, path)
	}
}

// flockRetry blocks for the lock, through interrupted system calls.
func flockRetry(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			return err
		}
	}
}

func (l *lockFile) release() error { return l.f.Close() }
