package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/store"
	"github.com/cnmnet/cnmnet/pkg/store/etcdstore"
)

// Registration is a host's record and live lease in the cluster store.
// While it is kept alive the other hosts leave the host's endpoints
// alone; once its lease expires they may take over the endpoints joined
// there (cnm.HostRecord).
type Registration struct {
	lease  clientv3.LeaseID
	cancel context.CancelFunc
	done   chan struct{}
}

// Register records host in s and keeps its live key under a lease of
// ttl, renewed until ctx ends or Close. Done closes when the lease is
// lost (expired while etcd could not be reached): the caller registers
// again.
func Register(ctx context.Context, s *etcdstore.Store, rec cnm.HostRecord, ttl time.Duration) (*Registration, error) {
	if rec.Name == "" {
		return nil, errors.New("register host: no name")
	}
	if rec.Registered.IsZero() {
		rec.Registered = time.Now().UTC()
	}
	cli := s.Client()
	secs := int64(ttl / time.Second)
	if secs < 1 {
		secs = 1
	}
	grantCtx, cancelGrant := context.WithTimeout(ctx, s.Timeout())
	defer cancelGrant()
	lease, err := cli.Grant(grantCtx, secs)
	if err != nil {
		return nil, fmt.Errorf("register host %s: lease: %w", rec.Name, err)
	}
	if _, err := cli.Put(grantCtx, s.Key(cnm.HostLiveKey(rec.Name)), rec.Registered.Format(time.RFC3339Nano), clientv3.WithLease(lease.ID)); err != nil {
		return nil, fmt.Errorf("register host %s: live key: %w", rec.Name, err)
	}
	// The record after the live key: a host with a record and no live key
	// is taken for gone, so a registration cut short between the two must
	// not leave the record alone.
	if err := s.Update(func(tx store.Tx) error { return store.PutJSON(tx, cnm.HostKey(rec.Name), rec) }); err != nil {
		return nil, fmt.Errorf("register host %s: %w", rec.Name, err)
	}
	kaCtx, cancel := context.WithCancel(ctx)
	ka, err := cli.KeepAlive(kaCtx, lease.ID)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("register host %s: keep-alive: %w", rec.Name, err)
	}
	r := &Registration{lease: lease.ID, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for range ka {
			// Each answer is a renewal; the channel closes when the
			// lease is gone or ctx ends.
		}
	}()
	return r, nil
}

// Done is closed when the registration's lease is no longer renewed.
func (r *Registration) Done() <-chan struct{} { return r.done }

// Close stops renewing the lease, which then expires: the host is taken
// for gone a TTL later. The host's record stays.
func (r *Registration) Close() {
	r.cancel()
	<-r.done
}
