package remote

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/remote/dockerplugin"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Join implements driverapi.Driver: the plugin names the interface it
// made in the host namespace, which the core moves into the sandbox and
// names CNI_IFNAME, and gives the gateways and static routes.
func (d *Driver) Join(nid, eid, sboxKey string, jinfo driverapi.JoinInfo, opts driverapi.Options) (err error) {
	ctx := context.Background()
	n, c, err := d.ready(ctx, nid)
	if err != nil {
		return err
	}
	if err := d.putEndpoint(eid, &endpoint{Network: nid, Joined: true, Host: d.host}); err != nil {
		return err
	}
	var reply joinReply
	req := joinRequest{NetworkID: nid, EndpointID: eid, SandboxKey: sboxKey, Options: map[string]any{}}
	if err := c.Call(ctx, "NetworkDriver.Join", req, &reply); err != nil {
		return cniError("plugin "+n.Target.String(), err)
	}
	if err := applyJoin(jinfo, &reply, opts.IfName); err != nil {
		return cniError("plugin "+n.Target.String(), fmt.Errorf("Join: %w", err))
	}
	err = c.Call(ctx, "NetworkDriver.ProgramExternalConnectivity", externalConnectivityRequest{NetworkID: nid, EndpointID: eid, Options: map[string]any{}}, nil)
	if err != nil && !dockerplugin.IsNotFound(err) { // the method is optional
		return cniError("plugin "+n.Target.String(), err)
	}
	return nil
}

// applyJoin hands the plugin's Join reply to the core.
func applyJoin(jinfo driverapi.JoinInfo, r *joinReply, ifName string) error {
	if r.InterfaceName != nil && r.InterfaceName.SrcName != "" {
		// The plugin's DstPrefix (or DstName) is Docker's naming; CNI
		// names the interface.
		if err := jinfo.SetNames(r.InterfaceName.SrcName, ifName); err != nil {
			return err
		}
	}
	if r.Gateway != "" {
		gw := net.ParseIP(r.Gateway)
		if gw == nil || gw.To4() == nil {
			return fmt.Errorf("%w: Gateway %q is not an IPv4 address", dockerplugin.ErrMalformed, r.Gateway)
		}
		if err := jinfo.SetGateway(gw); err != nil {
			return err
		}
	}
	if r.GatewayIPv6 != "" {
		gw := net.ParseIP(r.GatewayIPv6)
		if gw == nil || gw.To4() != nil {
			return fmt.Errorf("%w: GatewayIPv6 %q is not an IPv6 address", dockerplugin.ErrMalformed, r.GatewayIPv6)
		}
		if err := jinfo.SetGatewayIPv6(gw); err != nil {
			return err
		}
	}
	for i, sr := range r.StaticRoutes {
		_, dst, err := net.ParseCIDR(sr.Destination)
		if err != nil {
			return fmt.Errorf("%w: StaticRoutes[%d].Destination %q is not a CIDR", dockerplugin.ErrMalformed, i, sr.Destination)
		}
		var hop net.IP
		switch sr.RouteType {
		case routeNextHop:
			if hop = net.ParseIP(sr.NextHop); hop == nil {
				return fmt.Errorf("%w: StaticRoutes[%d].NextHop %q is not an IP address", dockerplugin.ErrMalformed, i, sr.NextHop)
			}
		case routeConnected:
		default:
			return fmt.Errorf("%w: StaticRoutes[%d].RouteType %d is neither 0 (next hop) nor 1 (connected)", dockerplugin.ErrMalformed, i, sr.RouteType)
		}
		if err := jinfo.AddStaticRoute(dst, hop); err != nil {
			return err
		}
	}
	// DisableGatewayService asks the Docker daemon not to connect the
	// container to its gateway network (docker_gwbridge): there is none
	// here, so there is nothing to disable.
	return nil
}

// Leave implements driverapi.Driver; a plugin that does not answer is
// told later.
func (d *Driver) Leave(nid, eid string) error {
	e, err := d.getEndpoint(eid)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !e.Joined {
		return nil
	}
	n, err := d.getNetwork(e.Network)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	req := endpointRequest{NetworkID: nid, EndpointID: eid}
	if err := d.send(n.Target, nid, eid, "NetworkDriver.RevokeExternalConnectivity", req); err != nil {
		return err
	}
	if err := d.send(n.Target, nid, eid, "NetworkDriver.Leave", req); err != nil {
		return err
	}
	e.Joined = false
	return d.putEndpoint(eid, e)
}

// CheckEndpoint implements driverapi.Checker: the plugin must be there
// and know the endpoint (EndpointOperInfo, where it implements it).
func (d *Driver) CheckEndpoint(nid, eid, _ string) error {
	if _, err := d.getEndpoint(eid); err != nil {
		return fmt.Errorf("remote: endpoint %s: the plugin was never told of it: %w", eid, err)
	}
	n, err := d.getNetwork(nid)
	if err != nil {
		return fmt.Errorf("remote: network %s: %w", nid, err)
	}
	if _, err := d.activated(context.Background(), n.Target); err != nil {
		return cniError("plugin "+n.Target.String(), err)
	}
	_, err = d.EndpointOperInfo(nid, eid)
	return err
}

// Status implements driverapi.StatusReporter: the plugin answers
// /Plugin.Activate as a network driver; calls it is owed are sent.
func (d *Driver) Status(info driverapi.NetworkInfo) error {
	_, t, err := parseConf(info.Config)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if _, err := d.activated(ctx, t); err != nil {
		return fmt.Errorf("plugin %s: %w", t, err)
	}
	if err := d.flush(ctx, ""); err != nil {
		return fmt.Errorf("plugin %s: %w", t, err)
	}
	return nil
}
