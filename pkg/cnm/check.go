package cnm

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"

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
	want, err := expectedInterface(req.Conf, ep)
	if err != nil {
		return err
	}
	if a.DstName != "" {
		err := sandbox.Check(sbx, want.Interface)
		if errors.Is(err, sandbox.ErrReplaced) {
			return notJoined(req, ep)
		}
		if err != nil {
			if len(want.unlisted) > 0 {
				return newError(types.ErrInternal, "endpoint %s: %v (prevResult does not list %s either)",
					ep.Name, err, strings.Join(want.unlisted, ", "))
			}
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
		if id := c.ipamDriver(ep.IPAM); id != nil || ep.IPAM == ipam.RemoteType {
			// The protocol has no check of a reservation: the plugin
			// that holds it must be there.
			if id == nil {
				return noIPAMDriver(ep.IPAM)
			}
			if err := id.Status(ctx, req.Conf.Raw); err != nil {
				return newError(types.ErrInternal, "endpoint %s: ipam %s: %v", ep.Name, ep.IPAM, err)
			}
			return nil
		}
		if err := c.delegate(req, ep).Check(ctx); err != nil {
			return newError(types.ErrInternal, "endpoint %s: ipam %s: %v", ep.Name, ep.IPAM, err)
		}
		return nil
	}
}

// expected is what CHECK expects of an endpoint's interface in the
// sandbox, and which of its addresses prevResult does not list.
type expected struct {
	sandbox.Interface
	unlisted []string
}

// expectedInterface is the endpoint's interface as CHECK expects it: the
// record, as prevResult says the chain left it. The spec has CHECK
// consult prevResult, the result the runtime kept from the whole chain's
// ADD, and allow for later plugins to have changed what this one made:
// the MAC is the one prevResult gives the sandbox interface (tuning's
// "mac"), an address prevResult lists with another prefix is expected
// with that prefix, and a route prevResult lists with another gateway is
// expected with that gateway; a route it leaves out is not checked (a
// later plugin removed it), but for an elected default route, which came
// after the ADD. Every address of the endpoint must still be in the
// sandbox: one missing from both is really wrong. Without an interface
// in the sandbox there is only prevResult to compare with, which must
// then list every address.
func expectedInterface(conf *NetConf, ep *Endpoint) (expected, error) {
	want := expected{Interface: sandboxInterface(ep)}
	if conf.PrevResult == nil {
		return want, nil
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return want, newError(types.ErrDecodingFailure, "prevResult: %v", err)
	}
	a := ep.Sandbox
	if a.DstName == "" {
		for _, addr := range ep.ipNets() {
			if prevAddress(prev, addr.IP) == nil {
				return want, newError(types.ErrInternal, "prevResult: address %s of endpoint %s is missing", addr, ep.Name)
			}
		}
		return want, nil
	}
	idx := slices.IndexFunc(prev.Interfaces, func(i *current.Interface) bool { return i.Name == a.DstName && i.Sandbox != "" })
	if idx < 0 {
		return want, newError(types.ErrInternal, "prevResult: interface %s of endpoint %s is missing", a.DstName, ep.Name)
	}
	if m := prev.Interfaces[idx].Mac; m != "" {
		mac, err := net.ParseMAC(m)
		if err != nil {
			return want, newError(types.ErrDecodingFailure, "prevResult: interface %s: mac %q: %v", a.DstName, m, err)
		}
		want.MAC = mac
	}
	want.Addresses = nil
	for _, addr := range ep.ipNets() {
		if got := prevAddress(prev, addr.IP); got != nil {
			want.Addresses = append(want.Addresses, got)
			continue
		}
		want.unlisted = append(want.unlisted, addr.String())
		want.Addresses = append(want.Addresses, addr)
	}
	want.Routes = nil
	for _, r := range a.Routes {
		sr := r.sandboxRoute()
		if !r.Elected {
			gw, listed := prevGateway(prev, sr)
			if !listed {
				continue
			}
			if gw != nil {
				sr.GW = gw
			}
		}
		want.Routes = append(want.Routes, sr)
	}
	return want, nil
}

// prevAddress is the address prevResult lists for ip, with its prefix.
func prevAddress(prev *current.Result, ip net.IP) *net.IPNet {
	for _, ipc := range prev.IPs {
		if ipc.Address.IP.Equal(ip) {
			n := ipc.Address
			return &n
		}
	}
	return nil
}

// prevGateway reports whether prevResult lists a route to r's
// destination and, if it names another gateway than r's for it, which.
func prevGateway(prev *current.Result, r sandbox.Route) (net.IP, bool) {
	var other net.IP
	listed := false
	for _, pr := range prev.Routes {
		if !sameDestination(&pr.Dst, r.Dst) {
			continue
		}
		listed = true
		if pr.GW == nil || pr.GW.Equal(r.GW) {
			return nil, true
		}
		if other == nil {
			other = pr.GW
		}
	}
	return other, listed
}

// sameDestination reports whether a and b are the same network.
func sameDestination(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return false
	}
	onesA, bitsA := a.Mask.Size()
	onesB, bitsB := b.Mask.Size()
	return onesA == onesB && bitsA == bitsB && a.IP.Mask(a.Mask).Equal(b.IP.Mask(b.Mask))
}
