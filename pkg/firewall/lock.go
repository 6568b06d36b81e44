package firewall

import (
	"time"

	"github.com/cnmnet/cnmnet/pkg/hostlock"
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
	return hostlock.Acquire(f.lockFile, "firewall", lockWait)
}
