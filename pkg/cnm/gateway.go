package cnm

import (
	"errors"
	"net"
	"sort"
	"strings"

	"github.com/cnmnet/cnmnet/pkg/sandbox"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// A sandbox has one default route per family, through the first endpoint
// that joined with a gateway of that family; the later ones keep theirs
// as standby routes (Attachment.StandbyRoutes).

// electGateways gives the sandbox a default route again after left, which
// provided it, has left: as libnetwork's updateGateway does, another
// endpoint of the sandbox with a gateway of that family takes over. The
// candidates are ordered as libnetwork orders a sandbox's endpoints (one
// with gateways of both families first, then by network name), then by
// endpoint name, so the choice is deterministic. The elected endpoint's
// attachment records the route, so that CHECK expects it and its own
// leave hands it on. sbx is the sandbox left was detached from; nothing
// is done unless its path still holds the namespace that was joined.
// Best effort: the leave is done whatever happens here.
func (c *Controller) electGateways(sbx sandbox.Ref, left *Endpoint) {
	families := defaultFamilies(left.Sandbox.Routes)
	if len(families) == 0 || left.Sandbox.NetNS.IsZero() {
		return
	}
	cands, err := c.gatewayCandidates(left)
	if err != nil {
		return
	}
	for _, v6 := range families {
		for _, cand := range cands {
			r, ok := defaultRoute(cand.Sandbox.StandbyRoutes, v6)
			if !ok {
				continue
			}
			err := sandbox.AddRoute(sbx, cand.Sandbox.DstName, r.sandboxRoute())
			if errors.Is(err, sandbox.ErrNoSandbox) {
				return
			}
			if errors.Is(err, sandbox.ErrDefaultTaken) {
				break // the sandbox has one again, from elsewhere
			}
			if err != nil {
				continue
			}
			_ = c.recordElected(cand, r)
			break
		}
	}
}

// gatewayCandidates are the other endpoints joined to left's sandbox
// (the same namespace, by identity) with an interface in it, in the
// order electGateways tries them.
func (c *Controller) gatewayCandidates(left *Endpoint) ([]*Endpoint, error) {
	var cands []*Endpoint
	err := c.store.View(func(tx store.Tx) error {
		sb := &SandboxRecord{}
		if err := store.GetJSON(tx, sandboxKey(left.Sandbox.Key), sb); err != nil {
			return err
		}
		for _, ref := range sb.Endpoints {
			network, name, ok := strings.Cut(ref, "/")
			if !ok || ref == left.ref() {
				continue
			}
			ep, err := getEndpoint(tx, network, name)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			a := ep.Sandbox
			if ep.State == StateJoined && a != nil && a.DstName != "" && a.NetNS == left.Sandbox.NetNS {
				cands = append(cands, ep)
			}
		}
		return nil
	})
	sort.SliceStable(cands, func(i, j int) bool {
		di, dj := dualStackGateway(cands[i]), dualStackGateway(cands[j])
		if di != dj {
			return di
		}
		if cands[i].Network != cands[j].Network {
			return cands[i].Network < cands[j].Network
		}
		return cands[i].Name < cands[j].Name
	})
	return cands, err
}

// recordElected moves r from ep's standby routes to its routes, marked
// elected, if ep is still attached as it was.
func (c *Controller) recordElected(ep *Endpoint, r Route) error {
	return c.store.Update(func(tx store.Tx) error {
		cur, err := getEndpoint(tx, ep.Network, ep.Name)
		if err != nil {
			return err
		}
		a := cur.Sandbox
		if a == nil || !a.sameAs(ep.Sandbox) {
			return nil
		}
		var standby []Route
		for _, s := range a.StandbyRoutes {
			if s.Dst != r.Dst {
				standby = append(standby, s)
			}
		}
		a.StandbyRoutes = standby
		r.Elected = true
		a.Routes = append(a.Routes, r)
		return putEndpoint(tx, cur, nil)
	})
}

// standbyRoutes are the routes of routes that the sandbox skipped.
func standbyRoutes(routes []Route, skipped []sandbox.Route) []Route {
	var out []Route
	for _, r := range routes {
		for _, s := range skipped {
			if s.Dst.String() == r.Dst {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// defaultFamilies lists the families (false: IPv4, true: IPv6) of the
// default routes among routes.
func defaultFamilies(routes []Route) []bool {
	var fams []bool
	for _, v6 := range []bool{false, true} {
		if _, ok := defaultRoute(routes, v6); ok {
			fams = append(fams, v6)
		}
	}
	return fams
}

// defaultRoute returns the default route of a family among routes.
func defaultRoute(routes []Route, v6 bool) (Route, bool) {
	for _, r := range routes {
		ip, n, err := net.ParseCIDR(r.Dst)
		if err != nil {
			continue
		}
		if ones, _ := n.Mask.Size(); ones == 0 && (ip.To4() == nil) == v6 {
			return r, true
		}
	}
	return Route{}, false
}

// dualStackGateway reports whether ep has gateways of both families, in
// the sandbox or standing by: libnetwork prefers such an endpoint.
func dualStackGateway(ep *Endpoint) bool {
	all := append(append([]Route(nil), ep.Sandbox.Routes...), ep.Sandbox.StandbyRoutes...)
	_, v4 := defaultRoute(all, false)
	_, v6 := defaultRoute(all, true)
	return v4 && v6
}

// sandboxRoute is r as the sandbox package takes it.
func (r Route) sandboxRoute() sandbox.Route {
	_, dst, _ := net.ParseCIDR(r.Dst)
	return sandbox.Route{Dst: dst, GW: net.ParseIP(r.GW)}
}
