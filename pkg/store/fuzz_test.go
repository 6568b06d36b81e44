package store_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cnmnet/cnmnet/pkg/store"
)

// maxFuzzFile bounds the store files FuzzStoreFile writes.
const maxFuzzFile = 64 << 10

// validStoreFile returns the file of a fresh store holding a few keys,
// as store.Open makes it.
func validStoreFile(tb testing.TB) []byte {
	tb.Helper()
	dir := tb.TempDir()
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	err = s.Update(func(tx store.Tx) error {
		for _, k := range []string{"networks/net1", "endpoints/net1/db", "ipam/net1/addr/10.1.0.5"} {
			if err := tx.Put(k, []byte(`{"name":"`+k+`"}`)); err != nil {
				return err
			}
		}
		return nil
	})
	if err := errors.Join(err, s.Close()); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, store.FileName))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// smallStoreFile returns a valid store file of 1 KiB pages, cut after its
// last page in use: a few KiB that the fuzzer mutates and minimises
// quickly (bbolt honours the page size a file was made with).
func smallStoreFile(tb testing.TB) []byte {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), store.FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: 1024})
	if err != nil {
		tb.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("cnm"))
		if err != nil {
			return err
		}
		if err := b.Put([]byte("meta/schema"), []byte(store.SchemaVersion)); err != nil {
			return err
		}
		return b.Put([]byte("networks/net1"), []byte(`{"name":"net1"}`))
	})
	if err := errors.Join(err, db.Close()); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b[:inUse(b)]
}

// inUse is the size of the pages a bbolt file's newest meta page says are
// in use.
func inUse(b []byte) int {
	le := binary.LittleEndian
	best, size := uint64(0), 0
	for _, off := range []int{0, int(le.Uint32(b[16+8:]))} {
		m := b[off+16:]
		if txid := le.Uint64(m[48:]); txid >= best {
			best, size = txid, int(le.Uint64(m[40:]))*int(le.Uint32(m[8:]))
		}
	}
	return size
}

// FuzzStoreFile writes arbitrary bytes as a store's file and opens it:
// the open must fail with ErrCorrupt or give a readable store, must not
// crash the process (bbolt faults, beyond the reach of recover, on pages
// past the end of a file), and must leave the file as it was.
func FuzzStoreFile(f *testing.F) {
	// store.Open's own file (4 KiB pages), and cut after its pages in use.
	big := validStoreFile(f)
	f.Add(big)
	f.Add(bytes.Clone(big[:inUse(big)]))
	small := smallStoreFile(f)
	f.Add(small)
	// Truncated copies: by one byte, to its two meta pages, into the
	// first meta page.
	for _, n := range []int{len(small) - 1, 2048, 100} {
		f.Add(bytes.Clone(small[:n]))
	}
	f.Add(bytes.Clone(big[:8192]))
	// The first meta page's checksum flipped: bbolt falls back on the
	// second.
	flipped := bytes.Clone(small)
	flipped[16+56] ^= 0xff
	f.Add(flipped)
	// Both meta pages' checksums flipped.
	both := bytes.Clone(flipped)
	both[1024+16+56] ^= 0xff
	f.Add(both)
	f.Add([]byte{})

	// One file path per fuzzing process, removed before each input so that
	// every open meets a new file: an open whose bbolt panic the store
	// recovered keeps the old file's lock, and would make the next input
	// on the same file "locked" rather than corrupt.
	path := filepath.Join(f.TempDir(), store.FileName)
	f.Fuzz(func(t *testing.T, content []byte) {
		if len(content) > maxFuzzFile {
			return
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := store.Open(filepath.Dir(path), store.Options{LockWait: time.Second})
		if err != nil {
			if !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("open: %v does not wrap ErrCorrupt", err)
			}
		} else {
			err := s.View(func(tx store.Tx) error {
				return tx.Scan("", func(string, []byte) error { return nil })
			})
			if err != nil && !errors.Is(err, store.ErrCorrupt) {
				t.Errorf("scan: %v does not wrap ErrCorrupt", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		}
		after, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(after, content) {
			t.Fatalf("the file was modified (%d bytes, now %d)", len(content), len(after))
		}
	})
}
