package cnm

import (
	"context"
	"errors"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/sandbox"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Check compares the endpoint attached as the request's (container ID,
// ifname) with its reservation, the sandbox and the host, and says what
// differs.
func (c *Controller) Check(ctx context.Context, req *Request) error {
	if err := req.validateAttachment(); err != nil {
		return err
	}
	nw, ep, err := c.lookup(req)
	if err != nil {
		return err
	}
	if nw == nil || ep == nil {
		return newError(types.ErrUnknownContainer, "container %s has no %s on network %s", req.ContainerID, req.IfName, req.Conf.Name)
	}
	a := ep.Sandbox
	if ep.State != StateJoined {
		return newError(types.ErrInternal, "endpoint %s is %s, not joined: its ADD did not finish", ep.Name, ep.State)
	}
	sbx := a.sandboxFor(req)
	if a.NetNS.IsZero() && req.NetNS != "" && req.NetNS != a.Key {
		// A record without identity: the path is all there is to compare.
		return invalidEnv("CNI_NETNS: %s, but endpoint %s is joined to %s", req.NetNS, ep.Name, a.Key)
	}
	if err := c.checkAddresses(ctx, req, nw, ep); err != nil {
		return err
	}
	if err := c.checkMAC(ep); err != nil {
		return err
	}
	if err := checkPrevResult(req.Conf, ep); err != nil {
		return err
	}
	if a.DstName != "" {
		err := sandbox.Check(sbx, sandboxInterface(ep))
		if errors.Is(err, sandbox.ErrReplaced) {
			return notJoined(req, ep)
		}
		if err != nil {
			return newError(types.ErrInternal, "endpoint %s: %v", ep.Name, err)
		}
	} else if !sbx.Alive() {
		if (sandbox.Ref{Path: sbx.Path}).Alive() {
			return notJoined(req, ep)
		}
		return newError(types.ErrInvalidNetNS, "endpoint %s: sandbox %s is gone", ep.Name, a.Key)
	}
	d, err := c.driver(nw.Driver)
	if err != nil {
		return err
	}
	if ck, ok := d.(driverapi.Checker); ok {
		if err := ck.CheckEndpoint(nw.ID, ep.ID, a.Key); err != nil {
			return newError(types.ErrInternal, "endpoint %s: driver %s: %v", ep.Name, nw.Driver, err)
		}
	}
	return nil
}

// checkMAC verifies that no other endpoint of the network has ep's MAC.
func (c *Controller) checkMAC(ep *Endpoint) error {
	if ep.MAC == "" {
		return nil
	}
	return c.store.View(func(tx store.Tx) error {
		holder, err := macHolderIn(tx, ep.Network, ep.MAC)
		if err != nil {
			return err
		}
		if holder != "" && holder != ep.Name {
			return newError(types.ErrInternal, "endpoint %s: MAC %s is endpoint %s's too", ep.Name, ep.MAC, holder)
		}
		return nil
	})
}

// notJoined is CHECK's answer when the sandbox path holds another
// network namespace than the one the endpoint joined.
func notJoined(req *Request, ep *Endpoint) error {
	if req.NetNS != "" {
		return invalidEnv("CNI_NETNS: %s is not the network namespace endpoint %s joined", req.NetNS, ep.Name)
	}
	return newError(types.ErrInvalidNetNS, "endpoint %s: sandbox %s is gone: the path holds another network namespace now",
		ep.Name, ep.Sandbox.Key)
}

// checkAddresses verifies that the endpoint still holds its reservations.
func (c *Controller) checkAddresses(ctx context.Context, req *Request, nw *Network, ep *Endpoint) error {
	switch ep.IPAM {
	case "":
		return nil
	case ipam.BuiltinType:
		return c.store.View(func(tx store.Tx) error {
			for _, ip := range ep.ips() {
				owner, err := ipam.NewAllocator(tx, nw.Name, nil).Holder(ip)
				if err != nil {
					return err
				}
				if owner != ep.ID {
					return newError(types.ErrInternal, "endpoint %s: reservation of %s is lost", ep.Name, ip)
				}
			}
			return nil
		})
	default:
		if err := c.delegate(req, ep).Check(ctx); err != nil {
			return newError(types.ErrInternal, "endpoint %s: ipam %s: %v", ep.Name, ep.IPAM, err)
		}
		return nil
	}
}

// checkPrevResult verifies that the result the runtime kept from ADD
// lists the endpoint's addresses.
func checkPrevResult(conf *NetConf, ep *Endpoint) error {
	if conf.PrevResult == nil {
		return nil
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return newError(types.ErrDecodingFailure, "prevResult: %v", err)
	}
	for _, want := range ep.ipNets() {
		found := false
		for _, ipc := range prev.IPs {
			if ipc.Address.IP.Equal(want.IP) && net.IP(ipc.Address.Mask).Equal(net.IP(want.Mask)) {
				found = true
				break
			}
		}
		if !found {
			return newError(types.ErrInternal, "prevResult: address %s of endpoint %s is missing", want, ep.Name)
		}
	}
	return nil
}
