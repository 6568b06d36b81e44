package cnm

import (
	"context"
	"errors"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Status tells whether an ADD on the request's network could succeed:
// the store is readable, an address is free in every range set, and the
// driver and any delegated IPAM plugin are ready. Otherwise it returns
// error 50.
func (c *Controller) Status(ctx context.Context, req *Request) error {
	d, err := c.driver(req.Conf.Type)
	if err != nil {
		return err
	}
	unavailable := func(format string, a ...any) error {
		return newError(types.ErrPluginNotAvailable, format, a...)
	}
	ic := req.Conf.IPAMConf
	err = c.store.View(func(tx store.Tx) error {
		if _, err := getNetwork(tx, req.Conf.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if ic == nil || ic.Delegated() {
			return nil
		}
		// An ADD reclaims expired reservations before it gives up.
		reclaimable := map[string]bool{}
		if err := scanEndpoints(tx, req.Conf.Name, func(ep *Endpoint) {
			if c.reclaimable(ep) {
				reclaimable[ep.ID] = true
			}
		}); err != nil {
			return err
		}
		exhausted, which, err := ipam.NewAllocator(tx, req.Conf.Name, ic).Exhausted(func(owner string) bool { return reclaimable[owner] })
		if err != nil {
			return err
		}
		if exhausted {
			return unavailable("ipam: no free address left in range set %s", which)
		}
		return nil
	})
	if err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return err
		}
		return unavailable("store: %v", err)
	}
	if ic != nil && (ic.Remote() || c.ipamDriver(ic.Type) != nil) {
		id := c.ipamDriver(ic.Type)
		if id == nil {
			return unavailable("ipam %s: %v", ic.Type, noIPAMDriver(ic.Type))
		}
		if err := id.Status(ctx, req.Conf.Raw); err != nil {
			return unavailable("ipam %s: %v", ic.Type, err)
		}
	} else if ic != nil && ic.Delegated() {
		if err := ipam.DelegateStatus(ctx, ic.Type, req.Conf.Raw, req.Path); err != nil {
			return unavailable("ipam %s: %v", ic.Type, err)
		}
	}
	if sr, ok := d.(driverapi.StatusReporter); ok {
		if err := sr.Status(c.networkInfo(req.Conf, nil)); err != nil {
			return unavailable("driver %s: %v", req.Conf.Type, err)
		}
	}
	return nil
}
