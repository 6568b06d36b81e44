package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cnmnet/cnmnet/pkg/store"
)

// kv is a store key as the transaction read it.
type kv struct {
	value []byte
	mod   int64 // its ModRevision; 0 for a key that was absent
}

// write is a buffered Put (or, with del, Delete).
type write struct {
	value []byte
	del   bool
}

// tx is one run of a transaction's function. Every read is at rev, the
// revision the first one answered at; writes wait in writes for the
// commit.
type tx struct {
	s     *Store
	write bool
	rev   int64 // 0 until the first read

	seen  map[string]kv // every key read, by Get or within a Scan
	gets  []string      // keys read by a Get of their own
	scans []string      // prefixes read by Scan
	// prefetched are keys read ahead (Prefetch) and not got yet: not
	// conditions of the commit until a Get takes them into seen.
	prefetched map[string]kv

	writes map[string]write

	// failed is the first failure of a read: the transaction commits
	// nothing after it, whatever fn makes of the error.
	failed error
	// schemaMissing: the first read found no schema key, so the commit
	// writes it.
	schemaMissing bool
}

// Get implements store.Tx.
func (t *tx) Get(key string) ([]byte, error) {
	if t.failed != nil {
		return nil, t.failed
	}
	if w, ok := t.writes[key]; ok {
		if w.del {
			return nil, store.ErrNotFound
		}
		return clone(w.value), nil
	}
	r, ok := t.seen[key]
	if p, ahead := t.prefetched[key]; !ok && ahead {
		r, ok = p, true
		t.seen[key] = r
		t.gets = append(t.gets, key)
	}
	if !ok && !t.scanned(key) {
		kvs, err := t.read("get "+key, key, false)
		if err != nil {
			return nil, err
		}
		if len(kvs) > 0 {
			r = kv{value: kvs[0].Value, mod: kvs[0].ModRevision}
		}
		t.seen[key] = r
		t.gets = append(t.gets, key)
	}
	if r.mod == 0 {
		return nil, store.ErrNotFound
	}
	return clone(r.value), nil
}

// Scan implements store.Tx: the keys under prefix at the transaction's
// revision, with its own writes merged in.
func (t *tx) Scan(prefix string, fn func(string, []byte) error) error {
	if t.failed != nil {
		return t.failed
	}
	if !t.scanned(prefix) {
		kvs, err := t.read("scan "+prefix, prefix, true)
		if err != nil {
			return err
		}
		for _, e := range kvs {
			k, ok := strings.CutPrefix(string(e.Key), t.s.data)
			if !ok {
				return fmt.Errorf("etcd store: scan %s: key %q outside %s", prefix, e.Key, t.s.data)
			}
			t.seen[k] = kv{value: e.Value, mod: e.ModRevision}
		}
		t.scans = append(t.scans, prefix)
	}
	merged := make(map[string][]byte)
	for k, r := range t.seen {
		if r.mod != 0 && strings.HasPrefix(k, prefix) {
			merged[k] = r.value
		}
	}
	for k, w := range t.writes {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if w.del {
			delete(merged, k)
		} else {
			merged[k] = w.value
		}
	}
	for _, k := range slices.Sorted(maps.Keys(merged)) {
		if err := fn(k, clone(merged[k])); err != nil {
			return err
		}
	}
	return nil
}

// maxPrefetch bounds one Prefetch request, well within MaxTxnOps.
const maxPrefetch = MaxTxnOps / 2

// Prefetch implements store.Prefetcher: the keys the transaction has
// not read, written or scanned yet, in one etcd request at its revision
// (the first read fixes it, as a Get's would).
func (t *tx) Prefetch(keys ...string) error {
	if t.failed != nil {
		return t.failed
	}
	var want []string
	for _, k := range keys {
		_, seen := t.seen[k]
		_, ahead := t.prefetched[k]
		_, written := t.writes[k]
		if !seen && !ahead && !written && !t.scanned(k) && !slices.Contains(want, k) {
			want = append(want, k)
		}
	}
	if len(want) > maxPrefetch {
		want = want[:maxPrefetch] // the rest are read by their Get
	}
	if len(want) == 0 {
		return nil
	}
	got, err := t.readMany(want)
	if err != nil {
		return err
	}
	if t.prefetched == nil {
		t.prefetched = map[string]kv{}
	}
	for i, k := range want {
		t.prefetched[k] = got[i]
	}
	return nil
}

// readMany gets keys in one request (a read-only etcd transaction) at
// the transaction's revision, fixing it if it is the first read, with
// the schema key too until the Store has seen it.
func (t *tx) readMany(keys []string) ([]kv, error) {
	s := t.s
	rev, withSchema := t.rev, t.rev == 0 && s.schema.Load() != schemaVerified
	var ops []clientv3.Op
	if withSchema {
		ops = append(ops, clientv3.OpGet(s.schemaKey))
	}
	for _, k := range keys {
		if rev != 0 {
			ops = append(ops, clientv3.OpGet(s.data+k, clientv3.WithRev(rev)))
		} else {
			ops = append(ops, clientv3.OpGet(s.data+k))
		}
	}
	var resp *clientv3.TxnResponse
	err := s.call(fmt.Sprintf("prefetch of %d keys", len(keys)), func(ctx context.Context) error {
		var err error
		resp, err = s.client.Txn(ctx).Then(ops...).Commit()
		return err
	})
	var schema []*mvccpb.KeyValue
	if err == nil && withSchema {
		schema = resp.Responses[0].GetResponseRange().Kvs
		t.schemaMissing, err = s.learnSchema(schema)
	}
	if err != nil {
		t.failed = err
		return nil, err
	}
	if rev == 0 {
		t.rev = resp.Header.Revision
	}
	first := len(resp.Responses) - len(keys)
	out := make([]kv, len(keys))
	for i := range keys {
		if kvs := resp.Responses[first+i].GetResponseRange().Kvs; len(kvs) > 0 {
			out[i] = kv{value: kvs[0].Value, mod: kvs[0].ModRevision}
		}
	}
	return out, nil
}

// Put implements store.Tx.
func (t *tx) Put(key string, value []byte) error {
	if err := t.writable("put", key); err != nil {
		return err
	}
	t.writes[key] = write{value: clone(value)}
	return nil
}

// Delete implements store.Tx.
func (t *tx) Delete(key string) error {
	if err := t.writable("delete", key); err != nil {
		return err
	}
	t.writes[key] = write{del: true}
	return nil
}

func (t *tx) writable(op, key string) error {
	if !t.write {
		return fmt.Errorf("%s %s: %w", op, key, errReadOnly)
	}
	if key == "" {
		return fmt.Errorf("%s: empty key", op)
	}
	return nil
}

// scanned reports whether key lies under a prefix the transaction has
// read: whatever it holds there is in seen.
func (t *tx) scanned(key string) bool {
	for _, p := range t.scans {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// read gets key (with prefix, every key under it) at the transaction's
// revision; the first read fixes that revision, and reads the schema key
// too until the Store has seen it, in the same request.
func (t *tx) read(what, key string, prefix bool) ([]*mvccpb.KeyValue, error) {
	s := t.s
	var opts []clientv3.OpOption
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	var kvs, schema []*mvccpb.KeyValue
	rev, withSchema := t.rev, t.rev == 0 && s.schema.Load() != schemaVerified
	err := s.call(what, func(ctx context.Context) error {
		switch {
		case rev != 0:
			resp, err := s.client.Get(ctx, s.data+key, append(opts, clientv3.WithRev(rev))...)
			if err != nil {
				return err
			}
			kvs = resp.Kvs
		case withSchema:
			resp, err := s.client.Txn(ctx).Then(clientv3.OpGet(s.schemaKey), clientv3.OpGet(s.data+key, opts...)).Commit()
			if err != nil {
				return err
			}
			schema = resp.Responses[0].GetResponseRange().Kvs
			kvs = resp.Responses[1].GetResponseRange().Kvs
			rev = resp.Header.Revision
		default:
			resp, err := s.client.Get(ctx, s.data+key, opts...)
			if err != nil {
				return err
			}
			kvs, rev = resp.Kvs, resp.Header.Revision
		}
		return nil
	})
	if err == nil && withSchema {
		t.schemaMissing, err = s.learnSchema(schema)
	}
	if err != nil {
		t.failed = err
		return nil, err
	}
	t.rev = rev
	return kvs, nil
}

// learnSchema checks the schema key as read (kvs: none, or it) and
// remembers what it found.
func (s *Store) learnSchema(kvs []*mvccpb.KeyValue) (missing bool, err error) {
	if len(kvs) == 0 {
		s.schema.Store(schemaMissing)
		return true, nil
	}
	if v := string(kvs[0].Value); v != store.SchemaVersion {
		return false, fmt.Errorf("%w: etcd prefix %s has schema version %q, this build reads %q",
			store.ErrCorrupt, s.prefix, v, store.SchemaVersion)
	}
	s.schema.Store(schemaVerified)
	return false, nil
}

// commit sends the buffered writes in one etcd transaction that applies
// them only if nothing the transaction read has changed since its
// revision; errRerun when something has.
func (t *tx) commit() error {
	s := t.s
	ops := t.ops()
	if len(ops) == 0 {
		return nil // it only read, at one revision: nothing to check
	}
	cmps := t.compares()
	if t.schemaMissing || (t.rev == 0 && s.schema.Load() == schemaMissing) {
		// The first write into an empty prefix marks it with the schema.
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.schemaKey), "=", 0))
		ops = append(ops, clientv3.OpPut(s.schemaKey, store.SchemaVersion))
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.Value(s.schemaKey), "=", store.SchemaVersion))
	}
	if len(cmps) > MaxTxnOps || len(ops) > MaxTxnOps {
		return fmt.Errorf("%w: %d writes (%d operations with directory markers and schema) and %d compares of what it read; etcd allows %d of each",
			ErrTxnTooLarge, len(t.writes), len(ops), len(cmps), MaxTxnOps)
	}
	var resp *clientv3.TxnResponse
	err := s.call(fmt.Sprintf("commit of %d writes", len(t.writes)), func(ctx context.Context) error {
		var err error
		resp, err = s.client.Txn(ctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(s.schemaKey)).Commit()
		return err
	})
	if errors.Is(err, store.ErrUnavailable) {
		return fmt.Errorf("%w (it may or may not have been applied)", err)
	}
	if err != nil {
		return err
	}
	if resp.Succeeded {
		s.schema.Store(schemaVerified)
		return nil
	}
	// Perhaps only the schema key was not what the commit assumed: the
	// Else branch read it, for the next run to know.
	if _, err := s.learnSchema(resp.Responses[0].GetResponseRange().Kvs); err != nil {
		return err
	}
	return fmt.Errorf("%w: what it read at revision %d changed before its commit", errRerun, t.rev)
}

// compares are the conditions of the commit: each key read by a Get still
// has the ModRevision it had (0: still absent); no key under a scanned
// prefix was written since the transaction's revision (which catches
// inserts and changes); and no key under the scanned prefix's directory
// was deleted since (its marker, which every delete below it bumps,
// catches what vanished from the range).
func (t *tx) compares() []clientv3.Cmp {
	s, after := t.s, t.rev+1
	scans := minimalPrefixes(t.scans)
	var cmps []clientv3.Cmp
	for _, p := range scans {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.data+p), "<", after).WithPrefix())
	}
	var dirs []string
	for _, p := range scans {
		dirs = append(dirs, p[:strings.LastIndex(p, "/")+1])
	}
	for _, d := range minimalPrefixes(dirs) {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.dirs+d), "<", after))
	}
	for _, k := range t.gets {
		if !t.scanned(k) {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.data+k), "=", t.seen[k].mod))
		}
	}
	return cmps
}

// ops are the commit's writes, in key order: the puts and deletes, then a
// put of the marker of every directory above a deleted key. A delete of a
// key the transaction saw absent is left out: the compares already make
// sure it still is.
func (t *tx) ops() []clientv3.Op {
	s := t.s
	var ops []clientv3.Op
	dirs := make(map[string]bool)
	for _, k := range slices.Sorted(maps.Keys(t.writes)) {
		w := t.writes[k]
		if !w.del {
			ops = append(ops, clientv3.OpPut(s.data+k, string(w.value)))
			continue
		}
		if t.knownAbsent(k) {
			continue
		}
		ops = append(ops, clientv3.OpDelete(s.data+k))
		dirs[""] = true
		for i := range len(k) {
			if k[i] == '/' {
				dirs[k[:i+1]] = true
			}
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		ops = append(ops, clientv3.OpPut(s.dirs+d, ""))
	}
	return ops
}

// knownAbsent reports whether the transaction read key and found nothing.
func (t *tx) knownAbsent(key string) bool {
	if r, ok := t.seen[key]; ok {
		return r.mod == 0
	}
	return t.scanned(key)
}

// minimalPrefixes returns ps sorted without duplicates and without any
// that another one is a prefix of: the ranges of the others cover them.
func minimalPrefixes(ps []string) []string {
	ps = slices.Clone(ps)
	slices.Sort(ps)
	ps = slices.Compact(ps)
	var out []string
	for _, p := range ps {
		// Sorted, a covering prefix comes before what it covers.
		if len(out) > 0 && strings.HasPrefix(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func clone(b []byte) []byte { return append([]byte{}, b...) }
