package overlay

import (
	"time"

	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/records"
	"github.com/cnmnet/cnmnet/pkg/hostlock"
)

// hostLockWait bounds the wait for another process's step.
const hostLockWait = 30 * time.Second

// hostLock takes the host lock and returns its release. Never take it
// while holding it.
func hostLock() (func(), error) {
	return hostlock.Acquire(records.HostLockFile, "overlay", hostLockWait)
}
