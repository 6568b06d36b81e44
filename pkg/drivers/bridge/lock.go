package bridge

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// hostLockFile serialises, across the plugin processes of a host, what
// the driver reads from the store and then makes on the host as one
// step: a network's creation, repair and removal (two first ADDs at once
// would both find no bridge, and the second take the first's for one
// that was there before), and the sync of a network's published ports
// with the store (two syncs could otherwise write their snapshots in the
// wrong order). The store is locked per transaction only, so it cannot.
const hostLockFile = "/run/cnmnet/bridge.lock"

// hostLockWait bounds the wait for another process's host step.
const hostLockWait = 30 * time.Second

// hostLock takes the driver's host lock and returns its release. Never
// take it while holding it: a second flock in one process blocks too.
func hostLock() (func(), error) {
	if err := os.MkdirAll(filepath.Dir(hostLockFile), 0o755); err != nil {
		return nil, fmt.Errorf("bridge lock: %w", err)
	}
	f, err := os.OpenFile(hostLockFile, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("bridge lock: %w", err)
	}
	deadline := time.Now().Add(hostLockWait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("bridge lock %s: %w", hostLockFile, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("bridge lock %s: still held by another process after %s", hostLockFile, hostLockWait)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
