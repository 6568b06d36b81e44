package cnm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sort"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/sandbox"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// The operations below serve an operator without a runtime (cnmctl):
// they take the same lock and go through the same records and drivers
// as the CNI verbs, with the configuration of the network's latest ADD.

// SetCNIPath sets where delegated IPAM plugins are found when there is
// no CNI request to say.
func (c *Controller) SetCNIPath(path string) { c.cniPath = path }

// notFound is the error for a network or endpoint that does not exist.
func notFound(format string, a ...any) error {
	return newError(types.ErrUnknownContainer, format, a...)
}

// Networks lists the stored networks by name.
func (c *Controller) Networks() ([]*Network, error) {
	var out []*Network
	err := c.store.View(func(tx store.Tx) error {
		out = nil
		if err := tx.Scan("networks/", func(k string, v []byte) error {
			nw := &Network{}
			if err := json.Unmarshal(v, nw); err != nil {
				return fmt.Errorf("%w: %s: %v", store.ErrCorrupt, k, err)
			}
			out = append(out, nw)
			return nil
		}); err != nil {
			return err
		}
		// In a cluster store Ready is this host's, as getNetwork reads it.
		for _, nw := range out {
			if err := readyHere(tx, nw); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// Network returns the named network.
func (c *Controller) Network(name string) (*Network, error) {
	var nw *Network
	err := c.store.View(func(tx store.Tx) error {
		var err error
		nw, err = getNetwork(tx, name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("network %q does not exist", name)
	}
	return nw, err
}

// Endpoints lists the endpoints of a network, or of all networks when
// network is "".
func (c *Controller) Endpoints(network string) ([]*Endpoint, error) {
	prefix := "endpoints/"
	if network != "" {
		if _, err := c.Network(network); err != nil {
			return nil, err
		}
		prefix = endpointPrefix(network)
	}
	var out []*Endpoint
	err := c.store.View(func(tx store.Tx) error {
		return tx.Scan(prefix, func(k string, v []byte) error {
			ep := &Endpoint{}
			if err := json.Unmarshal(v, ep); err != nil {
				return fmt.Errorf("%w: %s: %v", store.ErrCorrupt, k, err)
			}
			out = append(out, ep)
			return nil
		})
	})
	return out, err
}

// Endpoint returns the named endpoint of a network.
func (c *Controller) Endpoint(network, name string) (*Endpoint, error) {
	var ep *Endpoint
	err := c.store.View(func(tx store.Tx) error {
		var err error
		ep, err = getEndpoint(tx, network, name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("endpoint %q of network %q does not exist", name, network)
	}
	return ep, err
}

// Sandboxes lists the sandboxes and the endpoints joined to each.
func (c *Controller) Sandboxes() ([]*SandboxRecord, error) {
	var out []*SandboxRecord
	err := c.store.View(func(tx store.Tx) error {
		return tx.Scan("sandboxes/", func(k string, v []byte) error {
			sb := &SandboxRecord{}
			if err := json.Unmarshal(v, sb); err != nil {
				return fmt.Errorf("%w: %s: %v", store.ErrCorrupt, k, err)
			}
			out = append(out, sb)
			return nil
		})
	})
	return out, err
}

// OperInfo returns the driver's operational data of an endpoint, such as
// its published ports.
func (c *Controller) OperInfo(nw *Network, ep *Endpoint) (map[string]any, error) {
	d, ok := c.drivers[nw.Driver]
	if !ok {
		return nil, nil // another plugin's network: its driver is not in this build
	}
	return d.EndpointOperInfo(nw.ID, ep.ID)
}

// NetworkOperInfo returns what the driver tells of a network's host
// state, nil when it tells nothing.
func (c *Controller) NetworkOperInfo(nw *Network) (map[string]any, error) {
	d, ok := c.drivers[nw.Driver]
	if !ok {
		return nil, nil // another plugin's network: its driver is not in this build
	}
	if nd, ok := d.(driverapi.NetworkDescriber); ok && nw.Ready {
		return nd.NetworkOperInfo(nw.ID)
	}
	return nil, nil
}

// Usage is how much of a network's address pools is in use.
type Usage struct {
	Subnets  []string `json:"subnets"`
	Gateways []string `json:"gateways,omitempty"`
	Used     int      `json:"used"`
	// Families are the counts of each address family, IPv4 first: an
	// IPv4 and an IPv6 count added together mean nothing. None with
	// delegated IPAM, whose plugin keeps the count.
	Families []FamilyUsage `json:"families,omitempty"`
}

// FamilyUsage counts one address family's addresses.
type FamilyUsage struct {
	Family string `json:"family"` // "IPv4" or "IPv6"
	Used   int    `json:"used"`
	// Free is a decimal string: an IPv6 range holds more addresses than
	// any integer type.
	Free string `json:"free"`
}

// AddressUsage reports the network's subnets and how many addresses are
// used and free (built-in IPAM only).
func (c *Controller) AddressUsage(nw *Network) (*Usage, error) {
	conf, err := c.networkConf(nw)
	if err != nil {
		return nil, err
	}
	u := &Usage{}
	ic := conf.IPAMConf
	if ic == nil {
		return u, nil
	}
	for _, set := range ic.Ranges {
		for _, r := range set {
			u.Subnets = append(u.Subnets, r.Subnet)
			if r.Gateway != "" {
				u.Gateways = append(u.Gateways, r.Gateway)
			}
		}
	}
	if ic.Delegated() {
		// The plugin keeps the count; the subnets are those it gave the
		// network's first endpoint.
		for _, p := range nw.Pools {
			u.Subnets = append(u.Subnets, p.Subnet)
			if p.Gateway != "" {
				u.Gateways = append(u.Gateways, p.Gateway)
			}
		}
		return u, nil
	}
	used := map[string]int{}
	err = c.store.View(func(tx store.Tx) error {
		held, err := ipam.Holders(tx, nw.Name)
		for ip := range held {
			used[ipam.Family(ip)]++
		}
		u.Used = len(held)
		return err
	})
	if err != nil {
		return nil, err
	}
	capacity := ic.FamilyCapacity()
	for _, fam := range []string{"IPv4", "IPv6"} {
		if capacity[fam] == nil {
			continue
		}
		free := new(big.Int).Sub(capacity[fam], big.NewInt(int64(used[fam])))
		u.Families = append(u.Families, FamilyUsage{Family: fam, Used: used[fam], Free: free.String()})
	}
	return u, nil
}

// networkConf is the configuration of the network's latest ADD.
func (c *Controller) networkConf(nw *Network) (*NetConf, error) {
	raw := []byte(nw.Config)
	if len(raw) == 0 {
		raw, _ = json.Marshal(map[string]string{"cniVersion": "1.0.0", "name": nw.Name, "type": nw.Driver})
	}
	conf, err := LoadNetConf(raw)
	if err != nil {
		return nil, fmt.Errorf("stored configuration of network %s: %w", nw.Name, err)
	}
	return conf, nil
}

// requestFor is a request on the network with no container, for the
// steps of the CNI verbs that operations without a runtime share.
func (c *Controller) requestFor(nw *Network) (*Request, error) {
	conf, err := c.networkConf(nw)
	if err != nil {
		return nil, err
	}
	return &Request{Conf: conf, Args: &Args{All: map[string]string{}}, Path: c.cniPath}, nil
}

// ReserveEndpoint creates a persistent endpoint that no sandbox has
// joined yet: its address (ips if given, else allocated) and MAC (mac if
// given) are reserved for the first ADD that names it.
func (c *Controller) ReserveEndpoint(ctx context.Context, network, name string, ips []net.IP, mac net.HardwareAddr) (*Endpoint, error) {
	if err := ValidateEndpointName(name); err != nil {
		return nil, invalidConfig("endpoint name: %v", err)
	}
	nw, err := c.Network(network)
	if err != nil {
		return nil, err
	}
	req, err := c.requestFor(nw)
	if err != nil {
		return nil, err
	}
	if len(ips) > 0 && req.Conf.IPAMConf == nil {
		return nil, invalidConfig("ip: network %s has no ipam ranges", network)
	}
	d, err := c.driver(nw.Driver)
	if err != nil {
		return nil, err
	}
	var ep *Endpoint
	err = c.store.Update(func(tx store.Tx) error {
		if _, err := getEndpoint(tx, network, name); err == nil {
			return invalidConfig("endpoint %q of network %q exists already", name, network)
		}
		var err error
		ep, err = c.newEndpoint(tx, req, identity{Name: name, Persistent: true}, staticRequest{IPs: ips, MAC: mac})
		if err != nil {
			return err
		}
		return putEndpoint(tx, ep, nil)
	})
	if err != nil {
		return nil, err
	}
	if err := c.provision(ctx, req, nw, d, ep); err != nil {
		return nil, errors.Join(err, c.destroy(ctx, req, nw, ep))
	}
	err = c.store.Update(func(tx store.Tx) error {
		if err := putNetwork(tx, nw); err != nil {
			return err
		}
		return putEndpoint(tx, ep, nil)
	})
	return ep, err
}

// RemoveEndpoint deletes an endpoint and releases its reservation. A
// joined endpoint is removed only with force, which detaches it first.
func (c *Controller) RemoveEndpoint(ctx context.Context, network, name string, force bool) error {
	nw, err := c.Network(network)
	if err != nil {
		return err
	}
	ep, err := c.Endpoint(network, name)
	if err != nil {
		return err
	}
	if ep.Sandbox != nil && !force {
		return newError(CodeEndpointInUse, "endpoint %s is joined to sandbox %s (container %s)%s; use --force to detach it",
			ep.Name, ep.Sandbox.Key, ep.Sandbox.ContainerID, onHostSuffix(ep.Sandbox))
	}
	req, err := c.requestFor(nw)
	if err != nil {
		return err
	}
	if err := c.detach(req, nw, ep); err != nil {
		return err
	}
	return c.destroy(ctx, req, nw, ep)
}

// RemoveNetwork deletes a network with its host state. A network with
// endpoints is removed only with force, which deletes them first.
func (c *Controller) RemoveNetwork(ctx context.Context, name string, force bool) error {
	nw, err := c.Network(name)
	if err != nil {
		return err
	}
	eps, err := c.Endpoints(name)
	if err != nil {
		return err
	}
	if len(eps) > 0 && !force {
		return newError(CodeEndpointInUse, "network %s has %d endpoint(s); use --force to delete them with it", name, len(eps))
	}
	for _, ep := range eps {
		if err := c.RemoveEndpoint(ctx, name, ep.Name, true); err != nil {
			return err
		}
	}
	d, err := c.driver(nw.Driver)
	if err != nil {
		return err
	}
	return c.deleteNetwork(d, nw)
}

// Collected is one endpoint that Collect removed, or would remove.
type Collected struct {
	Network  string `json:"network"`
	Endpoint string `json:"endpoint"`
	Reason   string `json:"reason"`
	Action   string `json:"action"`
}

// Collect does what CNI GC does, without a runtime to list the valid
// attachments: endpoints joined to a sandbox that no longer exists are
// left (and deleted when ephemeral), and persistent endpoints whose
// reservation expired are deleted. With dryRun it only reports.
func (c *Controller) Collect(ctx context.Context, dryRun bool) ([]Collected, error) {
	nws, err := c.Networks()
	if err != nil {
		return nil, err
	}
	var out []Collected
	var errs errorList
	for _, nw := range nws {
		eps, err := c.Endpoints(nw.Name)
		if err != nil {
			errs.add(err)
			continue
		}
		req, err := c.requestFor(nw)
		if err != nil {
			errs.add(err)
			continue
		}
		for _, ep := range eps {
			col := Collected{Network: nw.Name, Endpoint: ep.Name}
			var act func() error
			switch {
			case ep.Sandbox != nil && !c.here(ep.Sandbox):
				continue // another host's to collect
			case ep.Sandbox != nil && !ep.Sandbox.sandbox().Alive():
				col.Reason = "sandbox " + ep.Sandbox.Key + " is gone"
				col.Action = "deleted"
				if ep.Persistent {
					col.Action = "left, reservation kept"
				}
				act = func() error { return c.leave(ctx, req, nw, ep) }
			case ep.Sandbox == nil && ep.Persistent && !ep.ExpiresAt.IsZero() && c.now().After(ep.ExpiresAt):
				col.Reason = "reservation expired at " + ep.ExpiresAt.Format("2006-01-02T15:04:05Z")
				col.Action = "deleted"
				act = func() error { return c.destroy(ctx, req, nw, ep) }
			case ep.Sandbox == nil && !ep.Persistent:
				col.Reason = "ephemeral endpoint with no sandbox"
				col.Action = "deleted"
				act = func() error { return c.destroy(ctx, req, nw, ep) }
			default:
				continue
			}
			if !dryRun {
				if err := act(); err != nil {
					errs.add(err)
					continue
				}
			}
			out = append(out, col)
		}
	}
	retried, err := c.collectReleases(ctx, dryRun)
	out = append(out, retried...)
	errs.add(err)
	return out, errs.err(types.ErrInternal, "collect")
}

// Finding is one inconsistency between the store and the host.
type Finding struct {
	Network string `json:"network"`
	Kind    string `json:"kind"`
	Object  string `json:"object"`
	Problem string `json:"problem"`
	// Repaired is set when Audit repaired it.
	Repaired bool `json:"repaired"`
}

// Audit compares the whole store with the host: joined endpoints whose
// sandbox or interface vanished, addresses reserved for no endpoint,
// index entries pointing nowhere, and links, rules and port reservations
// of the drivers that no endpoint owns. With repair it fixes what it
// safely can: stale joins are left, orphans removed.
func (c *Controller) Audit(ctx context.Context, repair bool) ([]Finding, error) {
	nws, err := c.Networks()
	if err != nil {
		return nil, err
	}
	var out []Finding
	var errs errorList
	for _, nw := range nws {
		found, err := c.auditNetwork(ctx, nw, repair)
		out = append(out, found...)
		errs.add(err)
	}
	pending, err := c.auditReleases(ctx, repair)
	out = append(out, pending...)
	errs.add(err)
	// The same state always reads the same: scans are ordered, but the
	// drivers' orphans come from maps.
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Network != b.Network {
			return a.Network < b.Network
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Object < b.Object
	})
	return out, errs.err(types.ErrInternal, "check")
}

func (c *Controller) auditNetwork(ctx context.Context, nw *Network, repair bool) ([]Finding, error) {
	eps, err := c.Endpoints(nw.Name)
	if err != nil {
		return nil, err
	}
	req, err := c.requestFor(nw)
	if err != nil {
		return nil, err
	}
	var out []Finding
	var errs errorList
	fix := func(f Finding, do func() error) {
		if repair {
			err := do()
			errs.add(err)
			f.Repaired = err == nil
		}
		out = append(out, f)
	}
	live := map[string]bool{}
	var eids []string
	for _, ep := range eps {
		live[ep.ID] = true
		if ep.Sandbox != nil && !c.here(ep.Sandbox) {
			continue // joined on another host, which audits it
		}
		eids = append(eids, ep.ID)
		if problem := joinProblem(ep); problem != "" {
			fix(Finding{Network: nw.Name, Kind: "endpoint", Object: ep.Name, Problem: problem},
				func() error { return c.leave(ctx, req, nw, ep) })
		}
	}
	orphanAddrs, dangling, err := c.storeOrphans(nw, live)
	if err != nil {
		return out, err
	}
	for _, ip := range orphanAddrs {
		fix(Finding{Network: nw.Name, Kind: "address", Object: ip, Problem: "reserved for no endpoint"},
			func() error { return c.collectOrphans(nw, live) })
	}
	for _, k := range dangling {
		fix(Finding{Network: nw.Name, Kind: "index", Object: k, Problem: "names no endpoint"},
			func() error { return c.collectOrphans(nw, live) })
	}
	d, err := c.driver(nw.Driver)
	if err != nil {
		// A driver this build does not have (another plugin's network):
		// the store's side is checked, the host's cannot be.
		return out, errs.err(types.ErrInternal, "repair")
	}
	if j, ok := d.(driverapi.Janitor); ok && nw.Ready {
		orphans, err := j.Orphans(nw.ID, eids)
		if err != nil {
			return out, errors.Join(errs.err(types.ErrInternal, "repair"), err)
		}
		for _, o := range orphans {
			problem := o.Problem
			if problem == "" {
				problem = "owned by no endpoint"
			}
			fix(Finding{Network: nw.Name, Kind: o.Kind, Object: o.Name, Problem: problem},
				func() error { return j.RemoveOrphans(nw.ID, []driverapi.Orphan{o}) })
		}
	}
	return out, errs.err(types.ErrInternal, "repair")
}

// joinProblem says what is wrong with a joined endpoint's sandbox, or "".
func joinProblem(ep *Endpoint) string {
	a := ep.Sandbox
	if a == nil {
		return ""
	}
	if !a.sandbox().Alive() {
		return "joined to sandbox " + a.Key + ", which is gone"
	}
	if a.DstName != "" {
		if err := sandbox.Check(a.sandbox(), sandbox.Interface{DstName: a.DstName}); errors.Is(err, sandbox.ErrInterfaceNotFound) {
			return "interface " + a.DstName + " is gone from sandbox " + a.Key
		}
	}
	return ""
}

// storeOrphans lists the network's address reservations and attachment
// index entries that no endpoint owns.
func (c *Controller) storeOrphans(nw *Network, live map[string]bool) (addrs, dangling []string, err error) {
	err = c.store.View(func(tx store.Tx) error {
		held, err := ipam.Holders(tx, nw.Name)
		if err != nil {
			return err
		}
		for ip, owner := range held {
			if !live[owner] {
				addrs = append(addrs, ip)
			}
		}
		dangling, err = danglingIndex(tx, nw.Name)
		return err
	})
	sort.Strings(addrs)
	return addrs, dangling, err
}
