package cnm

import (
	"strings"

	"github.com/cnmnet/cnmnet/pkg/store"
)

// In a cluster store, a global network's records are shared by every
// host, but some of what the core keeps means something on one host
// only: a sandbox is a netns path of that host, an attachment index
// entry is that host's runtime's (container ID, ifname), a network's
// host state is made on each host that uses it. Those key spaces are
// kept under the host's name, "hosts/<host>/<key>", so that two hosts
// never collide and each one's DEL and GC see only their own.

// hostLocalPrefixes are the key spaces that belong to one host.
var hostLocalPrefixes = []string{"sandboxes/", "attachments/", "hostnetworks/", "hostdrivers/"}

// hostsPrefix is where a cluster store keeps each host's key spaces.
const hostsPrefix = "hosts/"

// hostScoped returns s with the host-local key spaces of host kept
// under its name.
func hostScoped(s store.Store, host string) store.Store {
	return &hostStore{s: s, host: host}
}

type hostStore struct {
	s    store.Store
	host string
}

func (h *hostStore) View(fn func(store.Tx) error) error {
	return h.s.View(func(tx store.Tx) error { return fn(&hostTx{tx: tx, host: h.host}) })
}

func (h *hostStore) Update(fn func(store.Tx) error) error {
	return h.s.Update(func(tx store.Tx) error { return fn(&hostTx{tx: tx, host: h.host}) })
}

// Close closes the cluster store: the controller that made the wrapper
// owns it.
func (h *hostStore) Close() error { return h.s.Close() }

// hostTx is a transaction of a cluster store as one host sees it.
type hostTx struct {
	tx   store.Tx
	host string
}

// key maps a host-local key to its host's space.
func (t *hostTx) key(k string) string {
	for _, p := range hostLocalPrefixes {
		if strings.HasPrefix(k, p) {
			return hostsPrefix + t.host + "/" + k
		}
	}
	return k
}

func (t *hostTx) Get(k string) ([]byte, error)     { return t.tx.Get(t.key(k)) }
func (t *hostTx) Put(k string, value []byte) error { return t.tx.Put(t.key(k), value) }
func (t *hostTx) Delete(k string) error            { return t.tx.Delete(t.key(k)) }

// Prefetch implements store.Prefetcher, host-local keys in the host's
// space.
func (t *hostTx) Prefetch(keys ...string) error {
	mapped := make([]string, len(keys))
	for i, k := range keys {
		mapped[i] = t.key(k)
	}
	return store.Prefetch(t.tx, mapped...)
}

func (t *hostTx) Scan(prefix string, fn func(string, []byte) error) error {
	mapped := t.key(prefix)
	if mapped == prefix {
		return t.tx.Scan(prefix, fn)
	}
	cut := len(mapped) - len(prefix)
	return t.tx.Scan(mapped, func(k string, v []byte) error { return fn(k[cut:], v) })
}

// onHost returns tx as host sees it: the same transaction, with host's
// key spaces in place of the caller's. An attachment made on another
// host is unindexed there when this host takes its endpoint over. In a
// local store (host ""), tx itself.
func onHost(tx store.Tx, host string) store.Tx {
	if ht, ok := tx.(*hostTx); ok && host != "" && host != ht.host {
		return &hostTx{tx: ht.tx, host: host}
	}
	return tx
}

// clustered reports whether tx is a transaction of a cluster store.
func clustered(tx store.Tx) bool {
	_, ok := tx.(*hostTx)
	return ok
}
