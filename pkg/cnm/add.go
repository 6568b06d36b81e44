package cnm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/fault"
	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/sandbox"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// join is the state of one ADD as it goes.
type join struct {
	req    *Request
	driver driverapi.Driver
	// sandbox is the request's sandbox, with the identity it has now.
	sandbox    sandbox.Ref
	nw         *Network
	ep         *Endpoint
	newNetwork bool
	// prior is the endpoint as it was before this ADD; nil if new.
	prior *Endpoint
	// cursors are the IPAM cursors before this ADD allocated, for rollback.
	cursors map[string]string
	// attached is set once the interface is in the sandbox.
	attached bool
	// failed is why the host side of the ADD failed, for rollback.
	failed error
	// reserved is the network as reserve recorded it (networkState).
	reserved []byte
}

// networkState is nw as a value to compare: what putNetwork records of
// it, its readiness here included.
func networkState(nw *Network) []byte {
	b, _ := json.Marshal(nw) // a record's fields always encode
	return b
}

// Add attaches the request's container to the network: it resolves the
// endpoint's identity, creates the endpoint if it does not exist, joins
// it to the sandbox and returns the CNI result.
func (c *Controller) Add(ctx context.Context, req *Request) (_ *current.Result, err error) {
	if err := req.validateAttachment(); err != nil {
		return nil, err
	}
	d, err := c.driver(req.Conf.Type)
	if err != nil {
		return nil, err
	}
	if v, ok := d.(driverapi.ConfigValidator); ok {
		if err := v.ValidateConfig(req.Conf.Raw); err != nil {
			return nil, err
		}
	}
	if err := checkIPAMServes(req.Conf.IPAMConf); err != nil {
		return nil, err
	}
	if err := c.checkIPAMSpans(req.Conf); err != nil {
		return nil, err
	}
	id, err := req.Conf.resolveIdentity(req.Args, req.ContainerID, req.IfName)
	if err != nil {
		return nil, err
	}
	static, err := req.Conf.staticRequest(req.Args)
	if err != nil {
		return nil, err
	}
	if req.NetNS == "" {
		return nil, invalidEnv("CNI_NETNS: required for ADD")
	}
	sbx, err := sandbox.RefOf(req.NetNS)
	if errors.Is(err, sandbox.ErrNoSandbox) {
		return nil, newError(types.ErrInvalidNetNS, "CNI_NETNS: %s is not a network namespace", req.NetNS)
	}
	if err != nil {
		return nil, newError(types.ErrInvalidNetNS, "CNI_NETNS: %v", err)
	}
	named, err := c.lookUp(req, id)
	if err != nil {
		return nil, err
	}
	// An edited configuration is applied to the network, or refused,
	// before anything else changes; undone if the ADD fails after all.
	undo, err := c.updateNetwork(req, d, named.nw)
	if err != nil {
		return nil, err
	}
	updated := false
	defer func() {
		if !updated && undo != nil {
			if uerr := undo(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("put back the configuration of network %s: %w", req.Conf.Name, uerr))
			}
		}
	}()
	if err := c.releaseStaleJoin(ctx, req, sbx, named); err != nil {
		return nil, err
	}

	j := &join{req: req, driver: d, sandbox: sbx}
	err = c.reserve(j, id, static)
	var gone *beingDeleted
	if errors.As(err, &gone) {
		if derr := c.finishDelete(ctx, req, gone.ep); derr != nil {
			return nil, derr
		}
		j = &join{req: req, driver: d, sandbox: sbx}
		err = c.reserve(j, id, static)
	}
	if needsRoom(err) {
		// Runtimes that never send GC (containerd 1.6) would otherwise
		// leave a small network full of expired reservations.
		if freed, rerr := c.reclaimExpired(ctx, req); rerr == nil && freed > 0 {
			j = &join{req: req, driver: d, sandbox: sbx}
			err = c.reserve(j, id, static)
		}
	}
	if err != nil {
		return nil, err
	}
	fault.Point("add:reserved")
	ok := false
	defer func() {
		if !ok {
			c.rollback(ctx, j)
		}
	}()
	if err := c.setUp(ctx, j); err != nil {
		j.failed = err
		return nil, err
	}
	// The configuration of the latest successful ADD is the network's.
	j.nw.Config = req.Conf.networkConfig()
	// Most ADDs leave the network as reserve recorded it: not writing it
	// again saves a cluster store two reads.
	changed := !bytes.Equal(networkState(j.nw), j.reserved)
	// The join is recorded without waiting for the disk unless the
	// network changed: the reservation is durable since reserve, and
	// what a power cut may take back of the join is what it takes from
	// the host too, the interface in the sandbox. The endpoint is then
	// read as reserve left it, an ADD that did not finish, which DEL and
	// GC undo as after a SIGKILL; the next durable commit, any plugin's,
	// makes the join durable.
	commit := c.store.Update
	if !changed {
		commit = func(fn func(store.Tx) error) error { return store.UpdateVolatile(c.store, fn) }
	}
	if err := commit(func(tx store.Tx) error {
		keys := []string{sandboxKey(j.ep.Sandbox.Key)}
		if j.ep.MAC != "" {
			keys = append(keys, macKey(j.ep.Network, j.ep.MAC))
		}
		if changed {
			keys = append(keys, networkKey(j.nw.Name), hostNetworkKey(j.nw.Name))
		}
		if err := store.Prefetch(tx, keys...); err != nil {
			return err
		}
		if changed {
			if err := putNetwork(tx, j.nw); err != nil {
				return err
			}
		}
		j.ep.State = StateJoined
		return putEndpoint(tx, j.ep, nil)
	}); err != nil {
		return nil, fmt.Errorf("record join of endpoint %s: %w", j.ep.Name, err)
	}
	ok, updated = true, true
	return c.result(req.Conf, j.ep)
}

// beingDeleted is reserve's answer for an endpoint whose deletion is
// under way or died half-way: the ADD finishes it, then makes the
// endpoint anew.
type beingDeleted struct{ ep *Endpoint }

func (e *beingDeleted) Error() string {
	return fmt.Sprintf("endpoint %s of network %s is being deleted", e.ep.Name, e.ep.Network)
}

// needsRoom reports whether an ADD failed for want of an address or of
// room under the persistent-endpoint cap: what reclaiming expired
// reservations can give.
func needsRoom(err error) bool {
	var te *types.Error
	return errors.Is(err, ipam.ErrPoolExhausted) || errors.As(err, &te) && te.Code == CodeReservationLimit
}

// named is what an ADD names that exists already, read in one view
// before the ADD changes anything: its network and endpoint, nil where
// there is none. The edit check and the stale-join check go by it; the
// reservation reads both again in its own transaction.
type named struct {
	nw *Network
	ep *Endpoint
}

func (c *Controller) lookUp(req *Request, id identity) (named, error) {
	var n named
	err := c.store.View(func(tx store.Tx) error {
		n = named{}
		name := req.Conf.Name
		if err := store.Prefetch(tx, networkKey(name), hostNetworkKey(name), endpointKey(name, id.Name)); err != nil {
			return err
		}
		nw, err := getNetwork(tx, name)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		n.nw = nw
		ep, err := getEndpoint(tx, req.Conf.Name, id.Name)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		n.ep = ep
		return err
	})
	return n, err
}

// releaseStaleJoin leaves an endpoint the request names that is still
// joined to a sandbox which no longer exists (its runtime never sent
// DEL, or its path now holds another namespace), so that the new sandbox
// can join it.
func (c *Controller) releaseStaleJoin(ctx context.Context, req *Request, sbx sandbox.Ref, n named) error {
	nw, ep := n.nw, n.ep
	if ep == nil {
		return nil
	}
	switch a := ep.Sandbox; {
	case a == nil:
		return nil
	case !c.here(a):
		// Its sandbox cannot be looked at from here: the endpoint is
		// taken over only from a host known to be gone.
		return c.takeOverFromGoneHost(nw, ep)
	case a.holds(sbx) || a.sandbox().Alive():
		return nil
	}
	return c.leave(ctx, req, nw, ep)
}

// reserve records, in one transaction, the network (on first use), the
// endpoint with its built-in IPAM addresses, and the attachment being
// made, before anything on the host changes.
func (c *Controller) reserve(j *join, id identity, static staticRequest) error {
	req := j.req
	return c.store.Update(func(tx store.Tx) error {
		// A cluster store runs this again when a concurrent transaction
		// conflicts with it: nothing of an earlier run may stay.
		j.nw, j.ep, j.prior, j.cursors, j.newNetwork, j.reserved = nil, nil, nil, nil, false, nil
		// What it reads for certain, in one go where the store can.
		name := req.Conf.Name
		if err := store.Prefetch(tx, networkKey(name), hostNetworkKey(name), attachmentKey(name, req.ContainerID, req.IfName),
			endpointKey(name, id.Name), sandboxKey(req.NetNS)); err != nil {
			return err
		}
		nw, err := getNetwork(tx, req.Conf.Name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			nw = &Network{Name: req.Conf.Name, ID: newID(), Driver: req.Conf.Type, Created: c.now().UTC()}
			j.newNetwork = true
		case err != nil:
			return err
		case nw.Driver != req.Conf.Type:
			return invalidConfig("type: network %s exists with driver %q, not %q", nw.Name, nw.Driver, req.Conf.Type)
		case !nw.DeletingSince.IsZero() && c.now().Sub(nw.DeletingSince) < staleDeletion:
			return newError(types.ErrTryAgainLater, "network %s is being deleted; try again once it is gone", nw.Name)
		case !nw.DeletingSince.IsZero():
			// A deletion that died half-way: the network is made again.
			nw.DeletingSince, nw.Ready = time.Time{}, false
		}
		j.nw = nw
		if j.newNetwork {
			nw.Config = req.Conf.networkConfig()
		}
		if err := putNetwork(tx, nw); err != nil {
			return err
		}
		j.reserved = networkState(nw)
		if held, err := endpointOf(tx, nw.Name, req.ContainerID, req.IfName); err != nil {
			return err
		} else if held != nil {
			return newError(CodeInterfaceExists, "CNI_IFNAME: container %s already has %s on network %s (endpoint %s); DEL it first",
				req.ContainerID, req.IfName, nw.Name, held.Name)
		}
		ep, err := getEndpoint(tx, nw.Name, id.Name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if j.cursors, err = ipam.Cursors(tx, nw.Name); err != nil {
				return err
			}
			if ep, err = c.newEndpoint(tx, req, id, static); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			if err := reuseEndpoint(ep, req, static, c.host); err != nil {
				return err
			}
			prior := *ep
			j.prior = &prior
			if id.Persistent && !ep.Persistent {
				if err := checkPersistentLimit(tx, req.Conf, nw.Name); err != nil {
					return err
				}
				ep.Persistent = true
			}
		}
		ep.State = StateJoining
		ep.Sandbox = &Attachment{Key: req.NetNS, Host: c.host, NetNS: j.sandbox.ID, ContainerID: req.ContainerID, IfName: req.IfName, Joined: c.now().UTC()}
		ep.LeftAt, ep.ExpiresAt = time.Time{}, time.Time{}
		j.ep = ep
		return putEndpoint(tx, ep, nil)
	})
}

// newEndpoint makes the record of an endpoint, with its addresses when
// the built-in IPAM serves the network.
func (c *Controller) newEndpoint(tx store.Tx, req *Request, id identity, static staticRequest) (*Endpoint, error) {
	if id.Persistent {
		if err := checkPersistentLimit(tx, req.Conf, req.Conf.Name); err != nil {
			return nil, err
		}
	}
	ep := &Endpoint{
		Network:    req.Conf.Name,
		Name:       id.Name,
		ID:         newID(),
		Persistent: id.Persistent,
		Created:    c.now().UTC(),
		State:      StateCreated,
	}
	if static.MAC != nil {
		if err := claimableMAC(tx, ep, static.MAC.String()); err != nil {
			return nil, err
		}
		ep.MAC = static.MAC.String()
	}
	ic := req.Conf.IPAMConf
	switch {
	case ic == nil:
	case ic.Delegated():
		ep.IPAM = ic.Type // addresses come from the plugin, after this transaction
	default:
		ep.IPAM = ipam.BuiltinType
		ipcs, err := ipam.NewAllocator(tx, ep.Network, ic).Allocate(ep.ID, static.IPs)
		if err != nil {
			err = nameAddressHolder(tx, ep.Network, static.IPs, ep.ID, err)
			return nil, fmt.Errorf("allocate address for endpoint %s: %w", ep.Name, err)
		}
		ep.Addresses = addressesOf(ipcs)
	}
	return ep, nil
}

// reuseEndpoint checks that a request for an existing endpoint asks for
// nothing the endpoint does not hold: a reservation is never replaced.
// here is the request's host in a cluster store ("" in a host's own).
func reuseEndpoint(ep *Endpoint, req *Request, static staticRequest, here string) error {
	if ep.State == StateDeleting {
		return &beingDeleted{ep: ep}
	}
	if a := ep.Sandbox; a != nil && a.Host != here {
		return newError(CodeEndpointInUse, "endpoint %s of network %s is joined to sandbox %s (container %s) on host %s; "+
			"if that host is gone for good, its endpoints are taken over once its lease expires, or remove the endpoint: cnmctl endpoint rm --force --network %s %s",
			ep.Name, ep.Network, a.Key, a.ContainerID, a.Host, ep.Network, ep.Name)
	}
	if ep.Sandbox != nil {
		return newError(CodeEndpointInUse, "endpoint %s of network %s is joined to sandbox %s (container %s)",
			ep.Name, ep.Network, ep.Sandbox.Key, ep.Sandbox.ContainerID)
	}
	held := ep.ips()
	for _, ip := range static.IPs {
		if !containsIP(held, ip) {
			return invalidConfig("ips: endpoint %s holds %v, not %s; its reservation is kept, not replaced", ep.Name, held, ip)
		}
	}
	if static.MAC != nil && ep.MAC != "" && static.MAC.String() != ep.MAC {
		return invalidConfig("mac: endpoint %s has MAC %s, not %s; its reservation is kept, not replaced", ep.Name, ep.MAC, static.MAC)
	}
	if static.MAC != nil && ep.MAC == "" {
		ep.MAC = static.MAC.String()
	}
	return nil
}

// macHolder returns the lookup of MAC holders in network, for drivers
// that choose an endpoint's MAC.
func (c *Controller) macHolder(network string) func(string) (string, error) {
	return func(mac string) (holder string, err error) {
		err = c.store.View(func(tx store.Tx) error {
			holder, err = macHolderIn(tx, network, mac)
			return err
		})
		return holder, err
	}
}

// setUp does the host side of an ADD: delegated addresses, the driver's
// network and endpoint, the join, and the interface in the sandbox.
func (c *Controller) setUp(ctx context.Context, j *join) error {
	req, ep, d := j.req, j.ep, j.driver
	if err := c.provision(ctx, req, j.nw, d, ep); err != nil {
		return err
	}
	fault.Point("add:provisioned")
	ji := &joinInfo{ep: ep}
	opts := req.driverOptions()
	opts.Endpoint = ep.Name
	if err := d.Join(j.nw.ID, ep.ID, req.NetNS, ji, opts); err != nil {
		return fmt.Errorf("join endpoint %s to %s: %w", ep.Name, req.NetNS, err)
	}
	fault.Point("add:joined")
	ji.record(ep.Sandbox, req.Conf.IPAMConf)
	if ep.Sandbox.SrcName == "" {
		if err := sandbox.LoopbackUp(j.sandbox); err != nil {
			return fmt.Errorf("sandbox %s: %w", req.NetNS, err)
		}
		return nil
	}
	// Record the names before moving the interface, so that a DEL after a
	// crash in the move knows what to remove from the sandbox. An
	// interface the driver made in the sandbox goes with the driver's
	// Leave (the peer of its host veth), so it needs no commit of its own.
	if !ep.Sandbox.InSandbox {
		if err := c.store.Update(func(tx store.Tx) error { return putEndpoint(tx, ep, nil) }); err != nil {
			return fmt.Errorf("record join of endpoint %s: %w", ep.Name, err)
		}
	}
	fault.Point("add:recorded")
	att, err := sandbox.Attach(j.sandbox, sandboxInterface(ep))
	if err != nil {
		return fmt.Errorf("attach endpoint %s: %w", ep.Name, err)
	}
	j.attached = true
	fault.Point("add:attached")
	ep.Sandbox.StandbyRoutes = standbyRoutes(ep.Sandbox.Routes, att.SkippedRoutes)
	ep.Sandbox.Routes = withoutRoutes(ep.Sandbox.Routes, att.SkippedRoutes)
	if ep.MAC == "" && att.MAC != nil {
		// Keep the MAC the kernel chose so the endpoint keeps it on its next join.
		ep.MAC = att.MAC.String()
	}
	return nil
}

// provision makes what an endpoint needs before any sandbox joins it:
// addresses from a delegated IPAM plugin (which give the network its
// pools, or must fall in them), the driver's network on its first use,
// and the driver's endpoint.
func (c *Controller) provision(ctx context.Context, req *Request, nw *Network, d driverapi.Driver, ep *Endpoint) error {
	if ep.IPAM != "" && ep.IPAM != ipam.BuiltinType {
		if len(ep.Addresses) == 0 {
			addrs, err := c.requestAddresses(ctx, req, nw, ep)
			if err != nil {
				return fmt.Errorf("ipam %s: %w", ep.IPAM, err)
			}
			ep.Addresses = addrs
		}
		// Also for addresses recorded by an ADD killed before the
		// network was ready: they give its pools.
		if err := fitPools(nw, ep); err != nil {
			return err
		}
	}
	if !nw.Ready {
		if err := d.CreateNetwork(nw.ID, c.networkInfo(req.Conf, nw)); err != nil {
			return fmt.Errorf("create network %s: %w", nw.Name, err)
		}
		nw.Ready = true
	}
	if !ep.DriverCreated {
		info := &endpointInfo{ep: ep, macHolder: c.macHolder(nw.Name)}
		if err := d.CreateEndpoint(nw.ID, ep.ID, info, req.driverOptions()); err != nil {
			return fmt.Errorf("create endpoint %s: %w", ep.Name, err)
		}
		ep.DriverCreated = true
	}
	return nil
}

// rollback undoes a failed ADD: the sandbox interface, the join, and
// either the whole endpoint (made by this ADD) or its attachment.
func (c *Controller) rollback(ctx context.Context, j *join) {
	ep := j.ep
	a := ep.Sandbox
	if j.attached && a.DstName != "" {
		_ = sandbox.Detach(j.sandbox, a.DstName)
	}
	if err := j.driver.Leave(j.nw.ID, ep.ID); err != nil {
		return // the record still names the attachment: DEL or GC finishes
	}
	if j.prior == nil {
		if errors.Is(j.failed, ipam.ErrPluginNotFound) && len(ep.Addresses) == 0 {
			// The delegated plugin never ran (a mistyped type): there is
			// nothing to release, and no release to keep for GC.
			ep.IPAM = ""
		}
		if err := c.destroy(ctx, j.req, j.nw, ep); err != nil {
			return
		}
		if err := c.store.Update(func(tx store.Tx) error { return ipam.RestoreCursors(tx, j.nw.Name, j.cursors) }); err != nil {
			return
		}
	} else {
		restored := *j.prior
		restored.DriverCreated = j.prior.DriverCreated || ep.DriverCreated
		if restored.MAC == "" {
			restored.MAC = ep.MAC
		}
		if err := c.store.Update(func(tx store.Tx) error { return putEndpoint(tx, &restored, a) }); err != nil {
			return
		}
	}
	if j.newNetwork {
		// A first ADD that failed leaves no network behind either.
		_ = c.deleteNetwork(j.driver, j.nw)
	}
}

// withoutRoutes drops the skipped routes from the attachment's record, so
// that the result and CHECK speak of the routes the sandbox has.
func withoutRoutes(routes []Route, skipped []sandbox.Route) []Route {
	var kept []Route
	for _, r := range routes {
		drop := false
		for _, s := range skipped {
			if s.Dst.String() == r.Dst {
				drop = true
			}
		}
		if !drop {
			kept = append(kept, r)
		}
	}
	return kept
}

func addressesOf(ipcs []*current.IPConfig) []Address {
	var out []Address
	for _, ipc := range ipcs {
		a := Address{Address: ipc.Address.String()}
		if ipc.Gateway != nil {
			a.Gateway = ipc.Gateway.String()
		}
		out = append(out, a)
	}
	return out
}

func containsIP(list []net.IP, ip net.IP) bool {
	for _, x := range list {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}
