package firewall

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultLockFile serialises the read-modify-write of the shared chains
// between plugin processes: two networks created at once would otherwise
// each rewrite a shared chain from a state that lacks the other's rules.
// The xtables lock cannot serve: it is held only during one restore, and
// the nftables backend has none.
const DefaultLockFile = "/run/cnmnet/firewall.lock"

// lockWait bounds how long an operation waits for another process.
const lockWait = 30 * time.Second

// lock takes the firewall lock and returns its release.
func (f *Firewall) lock() (func(), error) {
	if err := os.MkdirAll(filepath.Dir(f.lockFile), 0o755); err != nil {
		return nil, fmt.Errorf("firewall lock: %w", err)
	}
	file, err := os.OpenFile(f.lockFile, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("firewall lock: %w", err)
	}
	deadline := time.Now().Add(lockWait)
	for {
		err := unix.Flock(int(file.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// Closing the file releases the lock.
			return func() { file.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			file.Close()
			return nil, fmt.Errorf("firewall lock %s: %w", f.lockFile, err)
		}
		if time.Now().After(deadline) {
			file.Close()
			return nil, fmt.Errorf("firewall lock %s: still held by another process after %s", f.lockFile, lockWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
