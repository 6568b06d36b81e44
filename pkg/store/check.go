package store

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's on-disk format (version 2): two meta pages at the start of the
// file, each a 16-byte page header followed by the meta record.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16
	metaSize       = 64 // magic..txid (56 bytes) and the checksum
	minPageSize    = 1024
	maxPageSize    = 64 << 10
	noFreelist     = ^uint64(0) // a store opened without freelist sync
)

// boltMeta is the part of a meta page that says how large the file is.
type boltMeta struct {
	pageSize uint32
	pages    uint64 // high-water mark: every page of the file is below it
	txid     uint64
}

// checkFile refuses a store file that bbolt could not map safely: bbolt
// trusts its meta pages and faults (SIGBUS, not a recoverable panic) on
// pages past the end of a truncated file.
func checkFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat store %s: %w", path, err)
	}
	m0, err0 := readMeta(f, 0)
	var best *boltMeta
	if err0 == nil {
		best = m0
		// The second meta page sits one page after the first.
		if m1, err1 := readMeta(f, int64(m0.pageSize)); err1 == nil && m1.txid > m0.txid {
			best = m1
		}
	} else {
		// The first meta page is damaged: look for the second at every
		// page size bbolt could have used.
		for ps := int64(minPageSize); ps <= maxPageSize; ps *= 2 {
			if m1, err1 := readMeta(f, ps); err1 == nil && int64(m1.pageSize) == ps {
				best = m1
				break
			}
		}
	}
	if best == nil {
		return fmt.Errorf("%w: %s has no valid meta page: %v", ErrCorrupt, path, err0)
	}
	if need := int64(best.pages) * int64(best.pageSize); st.Size() < need {
		return fmt.Errorf("%w: %s is truncated: %d bytes, its meta page says %d", ErrCorrupt, path, st.Size(), need)
	}
	return nil
}

// readMeta reads and validates the meta record of the page at off.
func readMeta(f *os.File, off int64) (*boltMeta, error) {
	buf := make([]byte, pageHeaderSize+metaSize)
	if _, err := f.ReadAt(buf, off); err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("meta page at %d is past the end of the file", off)
		}
		return nil, err
	}
	m := buf[pageHeaderSize:]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic {
		return nil, fmt.Errorf("meta page at %d: not a bbolt file", off)
	}
	if v := le.Uint32(m[4:]); v != boltVersion {
		return nil, fmt.Errorf("meta page at %d: format version %d", off, v)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != le.Uint64(m[56:]) {
		return nil, fmt.Errorf("meta page at %d: checksum mismatch", off)
	}
	meta := &boltMeta{pageSize: le.Uint32(m[8:]), pages: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}
	// The root bucket and the freelist must be pages of the file.
	if root := le.Uint64(m[16:]); root < 2 || root >= meta.pages {
		return nil, fmt.Errorf("meta page at %d: root page %d outside the %d pages", off, root, meta.pages)
	}
	if fl := le.Uint64(m[32:]); fl != noFreelist && (fl < 2 || fl >= meta.pages) {
		return nil, fmt.Errorf("meta page at %d: freelist page %d outside the %d pages", off, fl, meta.pages)
	}
	if meta.pageSize < minPageSize || meta.pageSize > maxPageSize || meta.pageSize&(meta.pageSize-1) != 0 {
		return nil, fmt.Errorf("meta page at %d: page size %d", off, meta.pageSize)
	}
	return meta, nil
}
