package store

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
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

// acquire takes the directory's lock, exclusive or shared (for
// transactions that only read, which need not wait for one another),
// waiting at most wait.
func acquire(dir string, wait time.Duration, shared bool) (*lockFile, error) {
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	how := unix.LOCK_EX
	if shared {
		how = unix.LOCK_SH
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err == nil {
		return &lockFile{f: f}, nil
	}
	return waitLock(f, path, wait, func(f *os.File) error { return flockRetry(f, how) })
}

// waitLock blocks for the lock in a goroutine, so that the wait can be
// bounded. Whether the lock is handed over or given up is decided once,
// under mu: a goroutine that gets the lock after the caller gave up lets
// go of it at once, so that a long-running caller (cnmctl, a daemon)
// never keeps a lock nobody holds a handle to.
func waitLock(f *os.File, path string, wait time.Duration, block func(*os.File) error) (*lockFile, error) {
	var (
		mu        sync.Mutex
		abandoned bool
	)
	got := make(chan error, 1)
	go func() {
		err := block(f)
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			f.Close() // releases the lock if we got it
			return
		}
		got <- err
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case err := <-got:
		return lockResult(f, path, err)
	case <-timer.C:
	}
	mu.Lock()
	defer mu.Unlock()
	select {
	case err := <-got:
		// The lock came as the wait ran out: take it.
		return lockResult(f, path, err)
	default:
		abandoned = true
		return nil, fmt.Errorf("%w: waited %s for %s", ErrLocked, wait, path)
	}
}

func lockResult(f *os.File, path string, err error) (*lockFile, error) {
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &lockFile{f: f}, nil
}

// flockRetry blocks for the lock, through interrupted system calls.
func flockRetry(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

func (l *lockFile) release() error { return l.f.Close() }
