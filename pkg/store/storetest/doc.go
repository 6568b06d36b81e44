// Package storetest is the contract every implementation of store.Store
// passes: the embedded bbolt store and the etcd cluster store run the
// same specs, so that the core and the drivers can rely on one meaning
// of View, Update, Get, Put, Delete and Scan whichever store they are
// given.
//
// Contract registers the specs (ginkgo) in the calling test suite:
//
//	var _ = storetest.Contract(func() func() store.Store {
//		dir := GinkgoT().TempDir()
//		return func() store.Store { return openStore(dir) }
//	})
//
// Besides the single-store behaviour (missing keys, overwrites, empty
// values, own writes, Scan's order and exact prefix, copies, rollback on
// error and panic, the JSON helpers, Prefixed), it checks what several
// plugin processes sharing one store rely on, each through a Store of its
// own: concurrent Updates lose no update, transactions that decide on
// what a Scan counted never leave more (or fewer) keys than they allow
// (no write skew, no phantoms), and a View reads one consistent snapshot
// while writers commit.
package storetest
