// Package store is the persistent state of cnmnet: a transactional,
// ordered key-value space shared by every plugin process on a node.
//
// The core and the drivers speak only to the Store and Tx interfaces.
// The default implementation, Open, is an embedded bbolt file under the
// configured data directory: locked across processes with a bounded wait,
// crash-safe (a SIGKILL at any instant leaves the last committed state),
// schema-versioned, and never re-initialised when it cannot be read.
// Its volatile Updates (VolatileUpdater) commit without waiting for the
// disk: seen by every process at once, they may be taken back, to the
// last durable commit, by a power cut.
// A cluster store (etcd) implements the same interfaces for the overlay:
// Update maps onto a compare-and-swap transaction, Scan onto a range read.
package store
