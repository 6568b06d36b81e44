// Package etcdstore is a store.Store kept in an etcd v3 cluster, for the
// state that the plugins of several hosts share (the overlay's): the same
// contract as the embedded bbolt store (package storetest), reached by
// every plugin invocation as a short-lived client.
//
// # Keys
//
// Under the configured Prefix (DefaultPrefix, "/cnmnet"):
//
//	<prefix>/schema        store.SchemaVersion, written by the first commit
//	<prefix>/data/<key>    the value of store key <key>, as it is
//	<prefix>/dirs/<dir>    the deletion marker of directory <dir> (empty)
//
// A directory is a prefix of a key that ends in "/", and "" (the root):
// key a/b/c is in directories "", "a/" and "a/b/". The value of a store
// key is its etcd value byte for byte, so that a watcher (Key gives the
// etcd key) or etcdctl reads it directly. Any non-empty key is allowed.
// A store whose schema key holds another version is refused with
// store.ErrCorrupt; it is checked by the first read of each Store, in the
// same request, and by every commit.
//
// # Transactions
//
// Update is serializable, optimistically, as etcd's STM: its function
// runs against a snapshot, and its writes apply in one etcd transaction
// only if nothing it read has changed in the meantime; otherwise it runs
// again, from scratch, with a jittered, doubling pause (2 ms to 100 ms),
// at least 10 times and until the store's Timeout has passed since the
// first run, and then fails with store.ErrConflict. So the
// function of an Update may run more than once, and must do nothing but
// read and write through its Tx (or be safe to repeat).
//
//   - Reads happen at one revision: the first read's answer fixes it,
//     later ones ask for it (WithRev). A read at a revision compacted
//     away makes the transaction run again at a fresh one.
//   - Writes are buffered; Get and Scan see them, merged in byte order.
//   - The commit is one Txn: If(compares).Then(writes). The compares are:
//     for every key read by Get, ModRevision equal to the one read (0 for
//     a key that was absent); for every scanned prefix, every key in its
//     range with ModRevision <= the revision (a key put there since,
//     inserted or changed, fails it); and for the directory of every
//     scanned prefix (the prefix up to its last "/"), its marker's
//     ModRevision <= the revision. Every commit that deletes a key also
//     puts the marker of each of the key's directories, so a key deleted
//     from a scanned range, which a range compare cannot see, fails it
//     too. Thus no phantoms and no write skew through Scan: a transaction
//     that counts keys under a prefix and inserts (or deletes) one by
//     that count conflicts with any other that changed the set first.
//     Compares that another covers (a key under a scanned prefix, a
//     prefix under another) are left out; so is the delete of a key read
//     as absent.
//   - A Scan of a prefix not ending in "/" uses its enclosing directory's
//     marker, and so conflicts with deletes anywhere in that directory:
//     more conflicts than needed, never fewer.
//
// View reads at one revision too, and its writes fail. A function's
// error commits nothing and is returned as it is; a panic commits nothing
// and goes on up.
//
// Round trips: every Get of a key not read before, and every Scan of a
// prefix not read before, is one RPC; the commit is one more, and is
// skipped when the function wrote nothing. An Update of k reads and some
// writes costs k+1 RPCs, a View of k reads k. (Once per prefix, the first
// commit into it by a Store that has read nothing costs one more: it
// learns that the schema key is not there yet.)
//
// Keys written through Client directly are seen by the compares (their
// ModRevision), but a key deleted other than by a transaction (a lease
// expiring, a Delete through Client) bumps no marker: a Scan does not
// conflict with that delete, a Get of the key does.
//
// Limits: etcd's --max-txn-ops (128 by default) bounds the compares and
// the writes of a commit separately (deletes bring their directories'
// markers); a transaction past MaxTxnOps fails with ErrTxnTooLarge before
// anything is sent. --max-request-bytes (1.5 MiB by default) bounds a
// whole commit, values and keys together (ErrTxnTooLarge too).
//
// # Failures
//
// Every etcd call has the Store's Timeout as its deadline and requires a
// leader, so a member cut off from its quorum refuses at once instead of
// hanging (a request refused for want of a leader is sent again, within
// the deadline, since nothing was done with it; so is a read refused
// because the leader changed while it waited, as after the leader
// died). An unreachable cluster, one without quorum, or a deadline
// passed, is store.ErrUnavailable, naming the endpoints; with FailFast
// every later call of that Store fails with it at once. A commit that
// timed out may or may not have been applied: the caller cannot tell,
// and must be able to run again what it asked for.
package etcdstore
