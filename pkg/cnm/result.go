package cnm

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// result is the CNI result of a join: the driver's host interfaces, the
// sandbox interface, addresses, routes and DNS, appended to a previous
// plugin's result when there is one.
func (c *Controller) result(conf *NetConf, ep *Endpoint) (*current.Result, error) {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: conf.DNS}
	if conf.PrevResult != nil {
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return nil, fmt.Errorf("prevResult: %w", err)
		}
		res = prev
	}
	a := ep.Sandbox
	for _, h := range a.HostInterfaces {
		res.Interfaces = append(res.Interfaces, &current.Interface{Name: h.Name, Mac: h.MAC})
	}
	var ifIndex *int
	if a.DstName != "" {
		i := len(res.Interfaces)
		ifIndex = &i
		res.Interfaces = append(res.Interfaces, &current.Interface{Name: a.DstName, Mac: ep.MAC, Sandbox: a.Key})
	}
	for _, addr := range ep.Addresses {
		ip, n, err := net.ParseCIDR(addr.Address)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: stored address %q: %w", ep.Name, addr.Address, err)
		}
		n.IP = ip
		res.IPs = append(res.IPs, &current.IPConfig{Address: *n, Gateway: net.ParseIP(addr.Gateway), Interface: ifIndex})
	}
	for _, r := range a.Routes {
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: stored route %q: %w", ep.Name, r.Dst, err)
		}
		res.Routes = append(res.Routes, &types.Route{Dst: *dst, GW: net.ParseIP(r.GW)})
	}
	if d := a.DNS; d != nil {
		res.DNS = types.DNS{Nameservers: d.Nameservers, Domain: d.Domain, Search: d.Search, Options: d.Options}
	}
	return res, nil
}
