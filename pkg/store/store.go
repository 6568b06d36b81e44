package store

import (
	"encoding/json"
	"errors"
	"fmt"
)

// SchemaVersion is the layout of keys and values this build reads and writes.
const SchemaVersion = "1"

var (
	// ErrNotFound is returned by Get for a key that has no value.
	ErrNotFound = errors.New("not found")
	// ErrLocked is returned when the store stayed locked by another
	// process for longer than the configured wait.
	ErrLocked = errors.New("store is locked by another process")
	// ErrCorrupt is returned when the store's file cannot be read as a
	// store of this schema; the file is left as it is.
	ErrCorrupt = errors.New("store is unreadable")
	// ErrNoStore is returned by Open with MustExist when there is no
	// store in the directory.
	ErrNoStore = errors.New("no store")
	// ErrUnavailable is returned by a cluster store that could not be
	// reached, or had no quorum, within its deadline: try again later.
	ErrUnavailable = errors.New("cluster store unavailable")
	// ErrConflict is returned by a cluster store when a transaction kept
	// conflicting with others committed at the same time, past its
	// retries: try again later.
	ErrConflict = errors.New("store transaction kept conflicting with concurrent ones")
)

// Store is a transactional key-value space. Keys are slash-separated
// paths; Scan returns them in byte order.
type Store interface {
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction that is committed
	// atomically when fn returns nil and discarded otherwise.
	Update(fn func(Tx) error) error
	// Close releases the store and its lock.
	Close() error
}

// Tx is one transaction of a Store.
type Tx interface {
	// Get returns the value of key, or ErrNotFound.
	Get(key string) ([]byte, error)
	// Put sets the value of key.
	Put(key string, value []byte) error
	// Delete removes key; removing a missing key is not an error.
	Delete(key string) error
	// Scan calls fn for every key that starts with prefix, in order.
	// fn must not modify the transaction; collect keys and modify after.
	Scan(prefix string, fn func(key string, value []byte) error) error
}

// Prefetcher is implemented by the transactions of a store that reads
// several keys at once for less than one by one (a cluster store: one
// round trip for them all). Prefetch reads keys now, at the
// transaction's revision; a later Get of one of them costs nothing. A
// key prefetched but never got is not read as far as the transaction is
// concerned: its change does not make the transaction run again.
type Prefetcher interface {
	Prefetch(keys ...string) error
}

// Prefetch has tx read keys at once when it can (Prefetcher), and does
// nothing otherwise: a Get of each costs what it costs.
func Prefetch(tx Tx, keys ...string) error {
	if p, ok := tx.(Prefetcher); ok {
		return p.Prefetch(keys...)
	}
	return nil
}

// GetJSON decodes the value of key into v.
func GetJSON(tx Tx, key string, v any) error {
	b, err := tx.Get(key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: decode %s: %v", ErrCorrupt, key, err)
	}
	return nil
}

// PutJSON encodes v as the value of key.
func PutJSON(tx Tx, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return tx.Put(key, b)
}

// Prefixed returns a view of s in which every key is prefix+key: a
// private key space, as handed to each driver.
func Prefixed(s Store, prefix string) Store {
	return &prefixStore{s: s, prefix: prefix}
}

type prefixStore struct {
	s      Store
	prefix string
}

func (p *prefixStore) View(fn func(Tx) error) error {
	return p.s.View(func(tx Tx) error { return fn(&prefixTx{tx: tx, prefix: p.prefix}) })
}

func (p *prefixStore) Update(fn func(Tx) error) error {
	return p.s.Update(func(tx Tx) error { return fn(&prefixTx{tx: tx, prefix: p.prefix}) })
}

// UpdateVolatile implements VolatileUpdater as the underlying store
// does: volatile where it is, durable where it is not.
func (p *prefixStore) UpdateVolatile(fn func(Tx) error) error {
	return UpdateVolatile(p.s, func(tx Tx) error { return fn(&prefixTx{tx: tx, prefix: p.prefix}) })
}

// Close does nothing: the underlying store belongs to its opener.
func (p *prefixStore) Close() error { return nil }

type prefixTx struct {
	tx     Tx
	prefix string
}

func (p *prefixTx) Get(key string) ([]byte, error)     { return p.tx.Get(p.prefix + key) }
func (p *prefixTx) Put(key string, value []byte) error { return p.tx.Put(p.prefix+key, value) }
func (p *prefixTx) Delete(key string) error            { return p.tx.Delete(p.prefix + key) }

// Prefetch implements Prefetcher, for the keys of the prefixed space.
func (p *prefixTx) Prefetch(keys ...string) error {
	mapped := make([]string, len(keys))
	for i, k := range keys {
		mapped[i] = p.prefix + k
	}
	return Prefetch(p.tx, mapped...)
}

func (p *prefixTx) Scan(prefix string, fn func(string, []byte) error) error {
	return p.tx.Scan(p.prefix+prefix, func(k string, v []byte) error {
		return fn(k[len(p.prefix):], v)
	})
}
