package cnm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// GC removes what no valid attachment and no live reservation owns in
// the request's network: endpoints joined by attachments not listed in
// cni.dev/valid-attachments (deleted when ephemeral, left when
// persistent), persistent endpoints whose reservation expired, and
// address reservations and index entries whose endpoint is gone. First
// it retries the address releases that a delegated IPAM plugin could not
// do when their endpoints were deleted (see Release), with the request's
// configuration, even after the network itself is gone. It keeps going
// past errors and reports them all.
func (c *Controller) GC(ctx context.Context, req *Request) error {
	valid := map[types.GCAttachment]bool{}
	for _, a := range req.Conf.ValidAttachments {
		valid[a] = true
	}
	var errs errorList
	errs.add(c.retryReleases(ctx, req.Conf.Name, req.Conf, req.Path))
	var nw *Network
	var eps []*Endpoint
	err := c.store.View(func(tx store.Tx) error {
		var err error
		if nw, err = getNetwork(tx, req.Conf.Name); err != nil {
			return err
		}
		return scanEndpoints(tx, nw.Name, func(ep *Endpoint) { eps = append(eps, ep) })
	})
	if errors.Is(err, store.ErrNotFound) && nw == nil {
		// The network was never used here, or is gone: nothing else to collect.
		return errs.err(types.ErrInternal, "gc of network "+req.Conf.Name)
	}
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, ep := range eps {
		// Only this host's runtime lists this host's attachments.
		stale := ep.Sandbox != nil && c.here(ep.Sandbox) && !valid[types.GCAttachment{ContainerID: ep.Sandbox.ContainerID, IfName: ep.Sandbox.IfName}]
		expired := c.reclaimable(ep)
		gone := false
		switch {
		case stale:
			err := c.leave(ctx, req, nw, ep)
			errs.add(err)
			gone = err == nil && !ep.Persistent
		case expired:
			err := c.destroy(ctx, req, nw, ep)
			errs.add(err)
			gone = err == nil
		}
		if !gone {
			live[ep.ID] = true
		}
	}
	errs.add(c.collectOrphans(nw, live))
	errs.add(c.gcDelegated(ctx, req, eps, live))
	return errs.err(types.ErrInternal, "gc of network "+nw.Name)
}

// reclaimable reports whether GC would delete ep, which no sandbox
// holds: an ephemeral endpoint, or a persistent one whose reservation
// expired.
func (c *Controller) reclaimable(ep *Endpoint) bool {
	if ep.Sandbox != nil {
		return false
	}
	return !ep.Persistent || ep.State == StateDeleting || !ep.ExpiresAt.IsZero() && c.now().After(ep.ExpiresAt)
}

// reclaimExpired deletes the endpoints of the request's network that GC
// would delete, and returns how many went.
func (c *Controller) reclaimExpired(ctx context.Context, req *Request) (int, error) {
	var nw *Network
	var doomed []*Endpoint
	err := c.store.View(func(tx store.Tx) error {
		var err error
		if nw, err = getNetwork(tx, req.Conf.Name); err != nil {
			return err
		}
		return scanEndpoints(tx, nw.Name, func(ep *Endpoint) {
			if c.reclaimable(ep) {
				doomed = append(doomed, ep)
			}
		})
	})
	if err != nil {
		return 0, err
	}
	freed := 0
	var errs errorList
	for _, ep := range doomed {
		if err := c.destroy(ctx, req, nw, ep); err != nil {
			errs.add(err)
			continue
		}
		freed++
	}
	return freed, errs.err(types.ErrInternal, "reclaim expired reservations of network "+nw.Name)
}

// finishDelete completes the deletion of an endpoint marked deleting.
func (c *Controller) finishDelete(ctx context.Context, req *Request, ep *Endpoint) error {
	var nw *Network
	err := c.store.View(func(tx store.Tx) error {
		var err error
		nw, err = getNetwork(tx, ep.Network)
		return err
	})
	if err != nil {
		return err
	}
	return c.destroy(ctx, req, nw, ep)
}

// scanEndpoints calls fn with each endpoint record of network.
func scanEndpoints(tx store.Tx, network string, fn func(*Endpoint)) error {
	return tx.Scan(endpointPrefix(network), func(_ string, v []byte) error {
		ep := &Endpoint{}
		if err := json.Unmarshal(v, ep); err != nil {
			return fmt.Errorf("%w: endpoint record: %v", store.ErrCorrupt, err)
		}
		fn(ep)
		return nil
	})
}

// collectOrphans removes address reservations held by no endpoint and
// attachment index entries that point nowhere: what a process killed
// between two writes could leave.
func (c *Controller) collectOrphans(nw *Network, live map[string]bool) error {
	return c.store.Update(func(tx store.Tx) error {
		if err := ipam.ReleaseOrphans(tx, nw.Name, func(owner string) bool { return live[owner] }); err != nil {
			return err
		}
		dangling, err := danglingIndex(tx, nw.Name)
		if err != nil {
			return err
		}
		for _, k := range dangling {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// gcDelegated forwards GC to a delegated IPAM plugin, naming the
// endpoints still alive as its valid attachments.
func (c *Controller) gcDelegated(ctx context.Context, req *Request, eps []*Endpoint, live map[string]bool) error {
	ic := req.Conf.IPAMConf
	if ic == nil || !ic.Delegated() || ic.Remote() || c.ipamDriver(ic.Type) != nil {
		// An IPAM driver's addresses are the endpoints' records: GC
		// deleting an endpoint releases them.
		return nil
	}
	var conf map[string]any
	if err := json.Unmarshal(req.Conf.Raw, &conf); err != nil {
		return err
	}
	valid := []types.GCAttachment{}
	for _, ep := range eps {
		if live[ep.ID] {
			valid = append(valid, types.GCAttachment{ContainerID: ep.ID, IfName: delegateIfName})
		}
	}
	conf["cni.dev/valid-attachments"] = valid
	raw, err := json.Marshal(conf)
	if err != nil {
		return err
	}
	if err := ipam.DelegateGC(ctx, ic.Type, raw, req.Path); err != nil {
		return fmt.Errorf("ipam %s: %w", ic.Type, err)
	}
	return nil
}
