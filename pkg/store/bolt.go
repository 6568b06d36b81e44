package store

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FileName is the name of the store's file inside the data directory.
const FileName = "state.db"

// DefaultLockWait bounds how long Open waits for another process's lock.
const DefaultLockWait = 10 * time.Second

var (
	rootBucket = []byte("cnm")
	schemaKey  = []byte("meta/schema")
)

// Options tune Open.
type Options struct {
	// LockWait bounds the wait for another process's lock; zero means
	// DefaultLockWait.
	LockWait time.Duration
	// MustExist makes Open fail with ErrNoStore, creating nothing, when
	// the directory holds no store: for tools that read a store the
	// plugins made, where a mistyped directory must not look empty.
	MustExist bool
}

// FileStore is the embedded store: one bbolt file. The directory's lock
// is held for each transaction, not from Open to Close, so that a plugin
// waiting on something else (an iptables-restore, a delegated IPAM
// plugin) does not keep every other plugin of the host waiting too; bbolt
// is opened for each transaction under it, since bbolt takes the file
// for as long as it is open and keeps its free pages in memory.
type FileStore struct {
	dir, path string
	wait      time.Duration
}

var _ Store = (*FileStore)(nil)

// Open opens (creating on first use) the store in dir, waiting at most
// opts.LockWait for a lock held by another process.
func Open(dir string, opts Options) (*FileStore, error) {
	if opts.LockWait <= 0 {
		opts.LockWait = DefaultLockWait
	}
	if opts.MustExist {
		if err := requireStore(dir); err != nil {
			return nil, err
		}
	}
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	lock, err := acquire(dir, opts.LockWait, false)
	if err != nil {
		return nil, err
	}
	defer lock.release()
	s := &FileStore{dir: dir, path: filepath.Join(dir, FileName), wait: opts.LockWait}
	if err := s.checkLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

// checkLocked makes the store file if it is missing and checks that it
// is one this build reads, under the directory's lock.
func (s *FileStore) checkLocked() error {
	path := s.path
	if err := createIfMissing(path); err != nil {
		return err
	}
	// A zero-length file is what a crash mid-creation would leave if the
	// file were created in place; since it is not, it means damage, and
	// bbolt would silently re-initialise it.
	if st, err := os.Stat(path); err != nil {
		return fmt.Errorf("stat store %s: %w", path, err)
	} else if st.Size() == 0 {
		return fmt.Errorf("%w: %s is empty", ErrCorrupt, path)
	}
	if err := checkFile(path); err != nil {
		return err
	}
	db, err := openBolt(path, s.wait, false)
	if err != nil {
		return err
	}
	defer db.Close()
	return checkSchema(db, path)
}

// requireStore fails with ErrNoStore unless dir holds a store file.
func requireStore(dir string) error {
	path := filepath.Join(dir, FileName)
	_, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w in %s: %s does not exist", ErrNoStore, dir, path)
	}
	if err != nil {
		return fmt.Errorf("%w in %s: %v", ErrNoStore, dir, err)
	}
	return nil
}

func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create store directory %s: %w", dir, err)
	}
	// MkdirAll honours the umask, and the store holds every container's
	// reservations: its directory is private. A directory that holds
	// other things (a dataDir of /var/lib, say) is not the store's to
	// change.
	if !dedicated(dir) {
		return nil
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("set mode of store directory %s: %w", dir, err)
	}
	return nil
}

// dedicated reports whether dir holds nothing but the store.
func dedicated(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		switch n := e.Name(); {
		case n == FileName, n == LockName, n == VolatileName, n == volatileTemp, strings.HasPrefix(n, FileName+".new-"):
		default:
			return false
		}
	}
	return true
}

// createIfMissing initialises a new store file beside path and links it
// into place, so that a reader never sees a half-written store and two
// processes racing to create it end up sharing one.
func createIfMissing(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stat store %s: %w", path, err)
	}
	// A name of its own for every caller, so that racing creators (threads
	// or processes) never touch each other's half-made files.
	suffix := make([]byte, 8)
	if _, err := rand.Read(suffix); err != nil {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	tmp := path + ".new-" + hex.EncodeToString(suffix)
	defer os.Remove(tmp)
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("create store %s: %w", tmp, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(rootBucket)
		if err != nil {
			return err
		}
		return b.Put(schemaKey, []byte(SchemaVersion))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o600)
	}
	if err != nil {
		return fmt.Errorf("initialise store %s: %w", tmp, err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("install store %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func openBolt(path string, wait time.Duration, readOnly bool) (db *bolt.DB, err error) {
	// bbolt panics on some kinds of damage instead of returning an error,
	// and reads pages straight from the mmap: a damaged page would be a
	// fatal fault unless faults panic too.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: wait, ReadOnly: readOnly})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("%w: waited %s for %s", ErrLocked, wait, path)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch),
		errors.Is(err, bolterrors.ErrChecksum):
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	default:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
}

func checkSchema(db *bolt.DB, path string) error {
	return viewIn(db, func(tx Tx) error {
		v, err := tx.Get(string(schemaKey))
		if err != nil {
			return fmt.Errorf("%w: %s has no schema version", ErrCorrupt, path)
		}
		if string(v) != SchemaVersion {
			return fmt.Errorf("%w: %s has schema version %q, this build reads %q",
				ErrCorrupt, path, v, SchemaVersion)
		}
		return nil
	})
}

// View implements Store.
func (s *FileStore) View(fn func(Tx) error) error { return s.transact(viewTx, fn) }

// Update implements Store. It takes in, first, what volatile
// transactions wrote since the last durable commit: committed, they are
// durable too.
func (s *FileStore) Update(fn func(Tx) error) error { return s.transact(durableTx, fn) }

// UpdateVolatile implements VolatileUpdater: its writes go to a file
// beside the store, renamed into place and never flushed, for the next
// transaction to read over bbolt's and the next durable one to take in.
func (s *FileStore) UpdateVolatile(fn func(Tx) error) error { return s.transact(volatileTx, fn) }

var _ VolatileUpdater = (*FileStore)(nil)

// txKind is what a transaction may do.
type txKind int

const (
	viewTx     txKind = iota // read
	durableTx                // read, write and commit, flushed
	volatileTx               // read, and write to the volatile file
)

// transact runs fn in one transaction under the directory's lock, which
// it waits for at most the store's LockWait (then ErrLocked): shared for
// a View, which opens bbolt read-only, so that the reads of many plugins
// at once do not queue behind one another; exclusive for an Update or a
// volatile one (which opens bbolt read-only too, as it writes only its
// own file). bbolt's own lock on the file agrees with it by then: only
// holders of the directory's lock open the file.
func (s *FileStore) transact(kind txKind, fn func(Tx) error) error {
	lock, err := acquire(s.dir, s.wait, kind == viewTx)
	if err != nil {
		return err
	}
	defer lock.release()
	db, err := openBolt(s.path, s.wait, kind != durableTx)
	if err != nil {
		return err
	}
	volatileFile := false // a durable commit found one, to remove once committed
	err = guard(func() error {
		if kind == durableTx {
			return db.Update(func(btx *bolt.Tx) (err error) {
				volatileFile, err = s.durable(btx, fn)
				return err
			})
		}
		return db.View(func(btx *bolt.Tx) error { return s.readOver(btx, kind == volatileTx, fn) })
	})
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close store %s: %w", s.path, cerr)
	}
	if err == nil && volatileFile {
		// Taken in: what is left of the file follows an older commit now,
		// and is read as nothing whether or not this removal happens.
		_ = os.Remove(filepath.Join(s.dir, VolatileName))
	}
	return err
}

// durable runs fn in btx, a read-write transaction, once the volatile
// writes that follow the commit before it are part of it; found says
// whether there was a volatile file, which the commit leaves out of date.
func (s *FileStore) durable(btx *bolt.Tx, fn func(Tx) error) (found bool, err error) {
	tx := wrapTx(btx)
	ov, found, err := loadOverlay(s.dir, uint64(btx.ID())-1) // a writable Tx's ID is the commit's to be
	if err != nil {
		return false, err
	}
	if err := ov.foldInto(tx); err != nil {
		return false, err
	}
	return found, fn(tx)
}

// readOver runs fn with the volatile writes in force read over btx; a
// volatile transaction's own writes join them, written out when fn
// succeeds.
func (s *FileStore) readOver(btx *bolt.Tx, volatile bool, fn func(Tx) error) error {
	base := uint64(btx.ID())
	ov, _, err := loadOverlay(s.dir, base)
	if err != nil {
		return err
	}
	if ov == nil {
		ov = overlay{}
	}
	if err := fn(&overlayTx{base: wrapTx(btx), ov: ov, volatile: volatile}); err != nil || !volatile {
		return err
	}
	return writeOverlay(s.dir, base, ov)
}

// viewIn runs fn in a read-only bbolt transaction of db, damage turned
// into errors.
func viewIn(db *bolt.DB, fn func(Tx) error) error {
	return guard(func() error {
		return db.View(func(btx *bolt.Tx) error { return fn(wrapTx(btx)) })
	})
}

// Close implements Store. A FileStore holds nothing between
// transactions.
func (s *FileStore) Close() error { return nil }

func guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	return fn()
}

func wrapTx(btx *bolt.Tx) Tx {
	return &boltTx{b: btx.Bucket(rootBucket)}
}

type boltTx struct {
	b *bolt.Bucket // nil when the root bucket is missing
}

func (t *boltTx) bucket() (*bolt.Bucket, error) {
	if t.b == nil {
		return nil, fmt.Errorf("%w: root bucket missing", ErrCorrupt)
	}
	return t.b, nil
}

func (t *boltTx) Get(key string) ([]byte, error) {
	b, err := t.bucket()
	if err != nil {
		return nil, err
	}
	v := b.Get([]byte(key))
	if v == nil {
		return nil, ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (t *boltTx) Put(key string, value []byte) error {
	b, err := t.bucket()
	if err != nil {
		return err
	}
	if cur := b.Get([]byte(key)); cur != nil && bytes.Equal(cur, value) {
		// Unchanged: a page bbolt would rewrite, and flush, for nothing.
		return nil
	}
	return b.Put([]byte(key), bytes.Clone(value))
}

func (t *boltTx) Delete(key string) error {
	b, err := t.bucket()
	if err != nil {
		return err
	}
	return b.Delete([]byte(key))
}

func (t *boltTx) Scan(prefix string, fn func(string, []byte) error) error {
	b, err := t.bucket()
	if err != nil {
		return err
	}
	p := []byte(prefix)
	c := b.Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if err := fn(string(k), bytes.Clone(v)); err != nil {
			return err
		}
	}
	return nil
}
