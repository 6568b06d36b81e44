package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// VolatileUpdater is implemented by stores that can commit a transaction
// without waiting for the disk: its writes are seen by every later
// transaction, of any process, and survive a process killed at any
// instant, but a power cut or a crash of the kernel may take them back,
// the whole transaction and every volatile one after it, to the last
// durable commit. The next durable Update makes them durable with it.
type VolatileUpdater interface {
	UpdateVolatile(fn func(Tx) error) error
}

// UpdateVolatile runs fn in a volatile transaction where s has them
// (VolatileUpdater), and in an Update otherwise: a durable commit keeps
// every promise a volatile one makes.
func UpdateVolatile(s Store, fn func(Tx) error) error {
	if v, ok := s.(VolatileUpdater); ok {
		return v.UpdateVolatile(fn)
	}
	return s.Update(fn)
}

// VolatileName is the file beside the store that holds what volatile
// transactions wrote since the last durable commit; volatileTemp is the
// one it is written to before it is renamed into place.
const (
	VolatileName = FileName + ".volatile"
	volatileTemp = VolatileName + ".new"
)

// volatileMagic starts the volatile file's header: the magic, the txid
// of the durable commit its writes follow, the CRC-32 of its body.
const volatileMagic = "cnm-volatile-1"

// overlay is the volatile writes in force: a value per key, nil for a
// key deleted.
type overlay map[string][]byte

// loadOverlay reads the volatile writes in the store directory dir that
// follow the durable commit base; found says whether there was a file,
// in force or not. A file that follows another commit is what a durable
// Update has taken in already (its removal comes after that commit, and
// a process can die in between); one that does not read back whole is
// what a power cut left of an unflushed write. Both are nothing in force.
func loadOverlay(dir string, base uint64) (ov overlay, found bool, err error) {
	path := filepath.Join(dir, VolatileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read volatile writes %s: %w", path, err)
	}
	header, body, ok := bytes.Cut(b, []byte("\n"))
	if !ok {
		return nil, true, nil
	}
	f := strings.Fields(string(header))
	if len(f) != 3 || f[0] != volatileMagic || f[1] != strconv.FormatUint(base, 10) ||
		f[2] != strconv.FormatUint(uint64(crc32.ChecksumIEEE(body)), 16) {
		return nil, true, nil
	}
	return decodeOverlay(body), true, nil
}

// writeOverlay puts ov in force in dir after the durable commit base:
// written beside the file and renamed over it, so that a process killed
// half-way leaves the earlier writes whole; not flushed, which is what
// makes it volatile.
func writeOverlay(dir string, base uint64, ov overlay) error {
	path := filepath.Join(dir, VolatileName)
	body := ov.encode()
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %d %x\n", volatileMagic, base, crc32.ChecksumIEEE(body))
	b.Write(body)
	tmp := filepath.Join(dir, volatileTemp)
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write volatile writes %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("install volatile writes %s: %w", path, err)
	}
	return nil
}

// encode writes ov as records of a key, a kind (deleted or a value) and
// a value, lengths as uvarints: keys are any bytes, which JSON would not
// keep.
func (ov overlay) encode() []byte {
	var b []byte
	for _, k := range slices.Sorted(maps.Keys(ov)) {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		v := ov[k]
		if v == nil {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

// decodeOverlay reads what encode wrote; nil if it does not read whole.
func decodeOverlay(b []byte) overlay {
	ov := overlay{}
	field := func() ([]byte, bool) {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) {
			return nil, false
		}
		f := b[w : w+int(n)]
		b = b[w+int(n):]
		return f, true
	}
	for len(b) > 0 {
		k, ok := field()
		if !ok || len(b) == 0 {
			return nil
		}
		kind := b[0]
		b = b[1:]
		switch kind {
		case 0:
			ov[string(k)] = nil
		case 1:
			v, ok := field()
			if !ok {
				return nil
			}
			ov[string(k)] = append([]byte{}, v...)
		default:
			return nil
		}
	}
	return ov
}

// foldInto makes ov part of tx, the durable transaction that follows the
// commit ov follows.
func (ov overlay) foldInto(tx Tx) error {
	for k, v := range ov {
		var err error
		if v == nil {
			err = tx.Delete(k)
		} else {
			err = tx.Put(k, v)
		}
		if err != nil {
			return fmt.Errorf("take in volatile write of %s: %w", k, err)
		}
	}
	return nil
}

// overlayTx is a transaction that reads ov over base and, when volatile,
// writes into ov; a View's never writes.
type overlayTx struct {
	base     Tx
	ov       overlay
	volatile bool
}

func (t *overlayTx) Get(key string) ([]byte, error) {
	if v, ok := t.ov[key]; ok {
		if v == nil {
			return nil, ErrNotFound
		}
		return bytes.Clone(v), nil
	}
	return t.base.Get(key)
}

func (t *overlayTx) Put(key string, value []byte) error {
	if !t.volatile {
		return t.base.Put(key, value)
	}
	t.ov[key] = bytes.Clone(value)
	if t.ov[key] == nil {
		t.ov[key] = []byte{} // an empty value, not a deletion
	}
	return nil
}

func (t *overlayTx) Delete(key string) error {
	if !t.volatile {
		return t.base.Delete(key)
	}
	t.ov[key] = nil
	return nil
}

// Scan merges the overlay's keys under prefix into base's, in order.
func (t *overlayTx) Scan(prefix string, fn func(string, []byte) error) error {
	var keys []string
	for k := range t.ov {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	next := 0
	// emitBefore hands fn the overlay's keys that sort before k.
	emitBefore := func(k string, all bool) error {
		for ; next < len(keys) && (all || keys[next] < k); next++ {
			if v := t.ov[keys[next]]; v != nil {
				if err := fn(keys[next], bytes.Clone(v)); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err := t.base.Scan(prefix, func(k string, v []byte) error {
		if err := emitBefore(k, false); err != nil {
			return err
		}
		if next < len(keys) && keys[next] == k {
			next++
			if v = t.ov[k]; v == nil {
				return nil
			}
			v = bytes.Clone(v)
		}
		return fn(k, v)
	})
	if err != nil {
		return err
	}
	return emitBefore("", true)
}
