package bridge

import (
	"time"

	"github.com/cnmnet/cnmnet/pkg/hostlock"
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
// take it while holding it.
func hostLock() (func(), error) {
	return hostlock.Acquire(hostLockFile, "bridge", hostLockWait)
}
