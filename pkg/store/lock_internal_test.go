package store

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLockTakenAfterTheWaitRanOut is the instant the black-box lock test
// can only hope to hit: the waiting goroutine gets the lock just after
// the caller gave up. A long-running caller must not be left holding it.
func TestLockTakenAfterTheWaitRanOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	const wait = 20 * time.Millisecond
	// The goroutine gets the lock before the wait runs out but is
	// scheduled again only after it did.
	reported := make(chan struct{})
	late := func(f *os.File) error {
		err := flockRetry(f, unix.LOCK_EX)
		time.Sleep(3 * wait)
		close(reported)
		return err
	}
	if l, err := waitLock(f, path, wait, late); err == nil {
		l.release()
		t.Fatal("waitLock succeeded; want ErrLocked")
	}
	<-reported
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := tryFlock(path)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lock is still held after a timed-out wait: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tryFlock(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
}
