package cluster

import (
	"context"
	"encoding/json"
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

// ErrAddressTaken is returned by Register when another live host has
// the address: the other hosts would send both hosts' traffic to one of
// them (every VM behind one NAT address, say).
var ErrAddressTaken = errors.New("address taken")

// Register records host in s and keeps its live key under a lease of
// ttl, renewed until ctx ends or Close. Done closes when the lease is
// lost (expired while etcd could not be reached): the caller registers
// again. It refuses (ErrAddressTaken) an address another live host
// registered: one whose lease expired has left it.
func Register(ctx context.Context, s *etcdstore.Store, rec cnm.HostRecord, ttl time.Duration) (*Registration, error) {
	if rec.Name == "" {
		return nil, errors.New("register host: no name")
	}
	if rec.Registered.IsZero() {
		rec.Registered = time.Now().UTC()
	}
	if err := checkAddressFree(s, rec); err != nil {
		return nil, fmt.Errorf("register host %s: %w", rec.Name, err)
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

// checkAddressFree refuses rec's address when another host registered it
// and is live.
func checkAddressFree(s store.Store, rec cnm.HostRecord) error {
	if rec.Address == "" {
		return nil
	}
	return s.View(func(tx store.Tx) error {
		var holders []string
		if err := tx.Scan(cnm.HostKey(""), func(_ string, v []byte) error {
			var other cnm.HostRecord
			if json.Unmarshal(v, &other) == nil && other.Name != rec.Name && other.Address == rec.Address {
				holders = append(holders, other.Name)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, h := range holders {
			if _, err := tx.Get(cnm.HostLiveKey(h)); err == nil {
				return fmt.Errorf("%w: %s is the underlay address of live host %s too; give each host its own (--underlay-address)", ErrAddressTaken, rec.Address, h)
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		return nil
	})
}
