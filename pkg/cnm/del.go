package cnm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/confcheck"
	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/fault"
	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/sandbox"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Del detaches the request's container from the network: it leaves the
// endpoint and deletes it unless it is persistent. It succeeds when
// there is nothing to remove. It acts inside the sandbox only if the
// runtime's CNI_NETNS (or, when it gives none, the recorded path) still
// holds the namespace the endpoint joined; otherwise that sandbox is gone
// and only the host side is undone. It needs only the network's name
// and the attachment (container ID, ifname): what it releases is what
// the store says (see LoadNetConfForDel).
func (c *Controller) Del(ctx context.Context, req *Request) error {
	if req.NetNS != "" && validatePath(req.NetNS) != nil {
		// CNI_NETNS is optional for DEL: a bad one is no path at all,
		// and the recorded one (identity-checked) is used.
		r := *req
		r.NetNS = ""
		req = &r
	}
	if err := req.validateAttachment(); err != nil {
		return err
	}
	nw, ep, err := c.lookup(req)
	if err != nil || nw == nil || ep == nil {
		return err
	}
	return c.leave(ctx, req, nw, ep)
}

// leave detaches ep from its sandbox; an ephemeral endpoint is then
// deleted, a persistent one keeps its reservation until it expires.
// Each step tolerates what is already gone; a step that fails stops the
// leave with the record intact, so that a retried DEL finishes it.
func (c *Controller) leave(ctx context.Context, req *Request, nw *Network, ep *Endpoint) error {
	if err := c.detach(req, nw, ep); err != nil {
		return err
	}
	if !ep.Persistent {
		return c.destroy(ctx, req, nw, ep)
	}
	before := ep.Sandbox
	return c.store.Update(func(tx store.Tx) error {
		if err := prefetchEndpoint(tx, &Endpoint{Network: ep.Network, Name: ep.Name, MAC: ep.MAC, Sandbox: before}); err != nil {
			return err
		}
		ep.Sandbox = nil
		ep.State = StateLeft
		ep.LeftAt = c.now().UTC()
		ep.ExpiresAt = time.Time{}
		if ttl := req.Conf.ReservationTTL; ttl > 0 {
			ep.ExpiresAt = ep.LeftAt.Add(time.Duration(ttl))
		}
		return putEndpoint(tx, ep, before)
	})
}

// detach undoes a join on the host: the interface in the sandbox (if the
// sandbox is still the one joined), then the driver's side. The records
// are left for the caller to update.
func (c *Controller) detach(req *Request, nw *Network, ep *Endpoint) error {
	a := ep.Sandbox
	if a == nil {
		return nil
	}
	if !c.here(a) {
		// Joined on another host (an endpoint removed by force from a
		// host that is gone): nothing of it is here to undo.
		return nil
	}
	d, err := c.driver(nw.Driver)
	if err != nil {
		return err
	}
	if a.DstName != "" {
		sbx := a.sandboxFor(req)
		if err := sandbox.Detach(sbx, a.DstName); err != nil {
			return fmt.Errorf("detach endpoint %s: %w", ep.Name, err)
		}
		c.electGateways(sbx, ep)
	}
	fault.Point("del:detached")
	if err := d.Leave(nw.ID, ep.ID); err != nil {
		return fmt.Errorf("leave endpoint %s: %w", ep.Name, err)
	}
	fault.Point("del:left")
	return nil
}

// destroy deletes an endpoint that no sandbox holds: the driver's
// resources, its addresses and its record.
func (c *Controller) destroy(ctx context.Context, req *Request, nw *Network, ep *Endpoint) error {
	d, err := c.driver(nw.Driver)
	if err != nil {
		return err
	}
	if mine, err := c.claimForDelete(ep); err != nil || !mine {
		return err
	}
	if err := d.DeleteEndpoint(nw.ID, ep.ID); err != nil {
		return fmt.Errorf("delete endpoint %s: %w", ep.Name, err)
	}
	fault.Point("del:deleted")
	var pending *Release
	if ep.IPAM != "" && ep.IPAM != ipam.BuiltinType {
		// A delegated plugin that is missing or failing must not keep
		// the endpoint for ever: its release is recorded, and GC and
		// cnmctl retry it.
		rel := c.releaseOf(req, nw, ep)
		if err := c.callRelease(ctx, rel, rel.NetConf, req.Path, req.NetNS); err != nil {
			rel.Error = err.Error()
			pending = rel
		}
	}
	return c.store.Update(func(tx store.Tx) error {
		if err := prefetchEndpoint(tx, ep); err != nil {
			return err
		}
		if ep.IPAM == ipam.BuiltinType {
			if err := ipam.NewAllocator(tx, nw.Name, nil).Release(ep.ID, ep.ips()); err != nil {
				return fmt.Errorf("release addresses of endpoint %s: %w", ep.Name, err)
			}
		}
		if pending != nil {
			if err := store.PutJSON(tx, releaseKey(nw.Name, ep.ID), pending); err != nil {
				return err
			}
		}
		return deleteEndpointRecord(tx, ep)
	})
}

// claimForDelete marks ep as being deleted if its record is still the
// one the caller decided to delete — the same endpoint, on the same
// attachment or none — and reports whether it is. The store is locked per
// transaction only: since the caller read ep, another process may have
// joined it (an expired persistent endpoint that came back), or deleted
// it; then it is not this caller's to delete. The mark keeps an ADD from
// joining it while its driver state and addresses go.
func (c *Controller) claimForDelete(ep *Endpoint) (bool, error) {
	mine := false
	err := c.store.Update(func(tx store.Tx) error {
		if err := prefetchEndpoint(tx, ep); err != nil {
			return err
		}
		cur, err := getEndpoint(tx, ep.Network, ep.Name)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		sameJoin := cur.Sandbox == nil && ep.Sandbox == nil ||
			cur.Sandbox != nil && ep.Sandbox != nil && cur.Sandbox.sameAs(ep.Sandbox)
		if cur.ID != ep.ID || !sameJoin {
			return nil
		}
		mine = true
		if cur.State == StateDeleting {
			return nil
		}
		cur.State = StateDeleting
		return putEndpoint(tx, cur, nil)
	})
	return mine, err
}

// deleteNetwork removes a network that has no endpoints: the driver's
// host state, the address pool's bookkeeping and the record.
func (c *Controller) deleteNetwork(d driverapi.Driver, nw *Network) error {
	// Checked and marked in one transaction: an ADD that comes after
	// sees the mark and waits (11) rather than join a network whose host
	// state is going.
	recorded := nw
	err := c.store.Update(func(tx store.Tx) error {
		busy := false
		if err := tx.Scan(endpointPrefix(nw.Name), func(string, []byte) error {
			busy = true
			return errStopScan
		}); err != nil && !errors.Is(err, errStopScan) {
			return err
		}
		if busy {
			return fmt.Errorf("network %s still has endpoints", nw.Name)
		}
		cur, err := getNetwork(tx, nw.Name)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		cur.DeletingSince = c.now().UTC()
		recorded = cur
		return putNetwork(tx, cur)
	})
	if err != nil {
		return err
	}
	// Even a network that never became ready: a CreateNetwork killed
	// half-way may have made host state, and DeleteNetwork is idempotent.
	if err := d.DeleteNetwork(nw.ID); err != nil {
		return fmt.Errorf("delete network %s: %w", nw.Name, err)
	}
	// The pools an IPAM driver reserved go back with the network; what
	// it cannot take back now is kept for GC, as endpoints' releases are.
	pending := c.releasePools(context.Background(), recorded)
	return c.store.Update(func(tx store.Tx) error {
		if err := ipam.ReleaseAll(tx, nw.Name); err != nil {
			return err
		}
		if pending != nil {
			if err := store.PutJSON(tx, releaseKey(nw.Name, pending.ID), pending); err != nil {
				return err
			}
		}
		if err := tx.Delete(hostNetworkKey(nw.Name)); err != nil {
			return err
		}
		return tx.Delete(networkKey(nw.Name))
	})
}

var errStopScan = errors.New("stop scan")

// delegate is the delegated IPAM plugin call for ep: the endpoint's ID is
// the identity the plugin keys its reservation by, so that a persistent
// endpoint keeps it across containers.
func (c *Controller) delegate(req *Request, ep *Endpoint) ipam.Delegate {
	return ipam.Delegate{
		Type:        ep.IPAM,
		NetConf:     req.Conf.Raw,
		Path:        req.Path,
		ContainerID: ep.ID,
		IfName:      delegateIfName,
		NetNS:       req.NetNS,
		Args:        delegateArgs(req.RawArgs),
	}
}

// delegateArgs is CNI_ARGS for a delegated plugin: the runtime's, marked
// so that the plugin ignores the keys meant for cnmnet (CNM_ENDPOINT).
func delegateArgs(raw string) string {
	for _, kv := range strings.Split(raw, ";") {
		if strings.HasPrefix(kv, "IgnoreUnknown=") {
			return raw
		}
	}
	if raw == "" {
		return "IgnoreUnknown=1"
	}
	return "IgnoreUnknown=1;" + raw
}

// delegateIfName is the interface name under which delegated IPAM
// plugins key an endpoint's reservation, whatever CNI_IFNAME it joins as.
const delegateIfName = "cnm0"

// LoadNetConfForDel parses what DEL needs of a network configuration:
// the network's name, its type, dataDir and cniVersion, which identify
// what to release, and reservationTTL. Everything else is the ADD's
// business: an ipam section that does not parse leaves IPAMConf nil (DEL
// releases what the endpoint records say), a bad reservationTTL counts as
// 0, a prevResult is not read. Only a configuration whose name or
// dataDir cannot be used is refused, and then nothing is touched.
func LoadNetConfForDel(raw []byte) (*NetConf, error) {
	var top struct {
		CNIVersion     json.RawMessage `json:"cniVersion"`
		Name           json.RawMessage `json:"name"`
		Type           json.RawMessage `json:"type"`
		DataDir        json.RawMessage `json:"dataDir"`
		ReservationTTL json.RawMessage `json:"reservationTTL"`
		Cluster        json.RawMessage `json:"cluster"`
		Host           json.RawMessage `json:"host"`
	}
	if err := confcheck.ObjectError(raw); err != nil {
		return nil, newError(types.ErrDecodingFailure, "decode network configuration: %v", err)
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, newError(types.ErrDecodingFailure, "decode network configuration: %v", err)
	}
	conf := &NetConf{Raw: raw}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *string
	}{
		{"cniVersion", top.CNIVersion, &conf.CNIVersion},
		{"name", top.Name, &conf.Name},
		{"type", top.Type, &conf.Type},
		{"dataDir", top.DataDir, &conf.DataDir},
	} {
		if len(f.raw) == 0 {
			continue
		}
		if err := json.Unmarshal(f.raw, f.dst); err != nil {
			return nil, invalidConfig("%s: %s is not a string", f.name, f.raw)
		}
	}
	if conf.DataDir == "" {
		conf.DataDir = DefaultDataDir
	}
	if err := ValidateNetworkName(conf.Name); err != nil {
		return nil, invalidConfig("name: %v", err)
	}
	if err := validatePath(conf.DataDir); err != nil {
		return nil, invalidConfig("dataDir: %v", err)
	}
	// The cluster store is where a global network's records are: without
	// it DEL cannot find what to release.
	if err := conf.decodeClusterKeys(top.Cluster, top.Host); err != nil {
		return nil, err
	}
	if err := conf.validateClusterKeys(); err != nil {
		return nil, err
	}
	var ttl Duration
	if len(top.ReservationTTL) > 0 && json.Unmarshal(top.ReservationTTL, &ttl) == nil && ttl > 0 {
		conf.ReservationTTL = ttl
	}
	if ic, err := ipam.ParseConfig(raw); err == nil {
		conf.IPAMConf = ic
	}
	return conf, nil
}

// ParseArgsForDel reads CNI_ARGS for DEL, which needs none of them: the
// well-formed pairs are kept (for delegated plugins), nothing is refused.
func ParseArgsForDel(s string) *Args {
	a := &Args{All: map[string]string{}}
	for _, pair := range strings.Split(s, ";") {
		if k, v, ok := strings.Cut(pair, "="); ok && k != "" {
			a.All[k] = v
		}
	}
	a.PodNamespace, a.PodName = a.All["K8S_POD_NAMESPACE"], a.All["K8S_POD_NAME"]
	return a
}
