package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/remote/dockerplugin"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// NetworkType is the CNI "type" of the remote driver.
const NetworkType = "cnm-remote"

// Driver forwards a network's driver calls to its Docker network plugin.
type Driver struct {
	// store is the driver's space, shared by every host for the networks
	// of a global-scope plugin: the endpoints the plugins were told of.
	// hostStore is this host's part (the same space for a local plugin):
	// the networks its plugin made, the calls it is owed, what it was
	// told of this host.
	store, hostStore store.Store
	// host is this host's name in the cluster store; "" in a host's own.
	host string
	dirs dockerplugin.Dirs
	// log is where what DEL cannot finish is said (stderr).
	log io.Writer

	mu      sync.Mutex
	clients map[target]*dockerplugin.Client
}

var (
	_ driverapi.Driver          = (*Driver)(nil)
	_ driverapi.Checker         = (*Driver)(nil)
	_ driverapi.StatusReporter  = (*Driver)(nil)
	_ driverapi.Janitor         = (*Driver)(nil)
	_ driverapi.ConfigValidator = (*Driver)(nil)
	_ driverapi.KeyDeclarer     = (*Driver)(nil)
)

// Register registers the remote driver with r, finding plugins where
// the Docker daemon does.
func Register(r driverapi.Registerer) error {
	return RegisterWithDirs(dockerplugin.DefaultDirs)(r)
}

// RegisterWithDirs returns the registration of a remote driver that
// finds plugins by name in dirs (tests use their own).
func RegisterWithDirs(dirs dockerplugin.Dirs) func(driverapi.Registerer) error {
	return func(r driverapi.Registerer) error {
		d := &Driver{store: r.DriverStore(NetworkType), dirs: dirs, log: os.Stderr, clients: map[target]*dockerplugin.Client{}}
		d.hostStore = d.store
		// A network has its plugin's scope, which the plugin asks of
		// NetworkScope before it opens the network's store: the driver
		// serves the networks of the store it is registered with, the
		// cluster store's (global scope) when the controller acts for a
		// host in one.
		scope := driverapi.LocalScope
		if h, ok := r.(clusterHost); ok && h.Host() != "" {
			scope, d.host, d.hostStore = driverapi.GlobalScope, h.Host(), r.DriverHostStore(NetworkType)
		}
		return r.RegisterDriver(NetworkType, d, driverapi.Capability{Scope: scope})
	}
}

// clusterHost is implemented by a controller over a cluster store
// (cnm.Controller): Host names the host it acts for there, "" in a
// host's own store.
type clusterHost interface {
	Host() string
}

// scope is the scope of the networks the driver serves.
func (d *Driver) scope() string {
	if d.host != "" {
		return driverapi.GlobalScope
	}
	return driverapi.LocalScope
}

// Type implements driverapi.Driver.
func (d *Driver) Type() string { return NetworkType }

// network is what the driver records of a network.
type network struct {
	Target target `json:"target"`
	// Capabilities are the plugin's answer to GetCapabilities.
	Capabilities capabilitiesReply `json:"capabilities"`
	// Created is set once the plugin answered CreateNetwork.
	Created bool `json:"created"`
}

// endpoint is what the driver records of an endpoint the plugin was told of.
type endpoint struct {
	Network string `json:"network"`
	// Joined is set from before the Join call until Leave was sent.
	Joined bool `json:"joined,omitempty"`
	// Host is the host whose plugin was told of it last (CreateEndpoint,
	// Join), for a global-scope plugin's network; "" in a host's store.
	Host string `json:"host,omitempty"`
}

func networkKey(nid string) string  { return "networks/" + nid }
func endpointKey(eid string) string { return "endpoints/" + eid }

// client returns the client of t's plugin, finding it anew in each
// process (a plugin restarted elsewhere is found).
func (d *Driver) client(t target) (*dockerplugin.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.clients[t]; ok {
		return c, nil
	}
	addr := dockerplugin.SocketAddr(t.Socket)
	if t.Plugin != "" {
		a, err := d.dirs.Find(t.Plugin)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", dockerplugin.ErrUnavailable, err)
		}
		addr = a
	}
	c, err := dockerplugin.New(addr, t.Timeout)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	d.clients[t] = c
	return c, nil
}

// activated returns t's client once /Plugin.Activate says it is a
// network driver.
func (d *Driver) activated(ctx context.Context, t target) (*dockerplugin.Client, error) {
	c, err := d.client(t)
	if err != nil {
		return nil, err
	}
	if err := c.Activate(ctx, dockerplugin.NetworkDriver); err != nil {
		return nil, err
	}
	return c, nil
}

// cniError gives a plugin call's failure its CNI code: 11 for a plugin
// that did not answer (try again later), the code of a CNI error the
// driver made, 999 with the plugin's message for the rest.
func cniError(what string, err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	switch {
	case errors.As(err, &te):
		return fmt.Errorf("%s: %w", what, err)
	case errors.Is(err, dockerplugin.ErrUnavailable):
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: %v", what, err), "")
	default:
		return types.NewError(types.ErrInternal, fmt.Sprintf("%s: %v", what, err), "")
	}
}

// A network's record is its host's: each host of a global network runs
// CreateNetwork on its own plugin, which its configuration names.
func (d *Driver) getNetwork(nid string) (*network, error) {
	var n network
	err := d.hostStore.View(func(tx store.Tx) error { return store.GetJSON(tx, networkKey(nid), &n) })
	if err != nil {
		return nil, err
	}
	return &n, nil
}

func (d *Driver) putNetwork(nid string, n *network) error {
	return d.hostStore.Update(func(tx store.Tx) error { return store.PutJSON(tx, networkKey(nid), n) })
}

func (d *Driver) getEndpoint(eid string) (*endpoint, error) {
	var e endpoint
	err := d.store.View(func(tx store.Tx) error { return store.GetJSON(tx, endpointKey(eid), &e) })
	if err != nil {
		return nil, err
	}
	return &e, nil
}

func (d *Driver) putEndpoint(eid string, e *endpoint) error {
	return d.store.Update(func(tx store.Tx) error { return store.PutJSON(tx, endpointKey(eid), e) })
}

// CreateNetwork implements driverapi.Driver: the plugin's capabilities
// are asked and recorded, and CreateNetwork is sent with the network's
// pools.
func (d *Driver) CreateNetwork(nid string, info driverapi.NetworkInfo) error {
	conf, t, err := parseConf(info.Config)
	if err != nil {
		return err
	}
	ctx := context.Background()
	c, err := d.activated(ctx, t)
	if err != nil {
		return cniError("plugin "+t.String(), err)
	}
	// Asked by NetworkScope moments ago, and kept: not asked again.
	caps, err := d.capabilities(ctx, t, dataDirOf(info.Config))
	if err != nil {
		return cniError("plugin "+t.String(), err)
	}
	if caps.Scope != d.scope() {
		// The plugin changed its scope since this invocation chose the store.
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("plugin %s: GetCapabilities: Scope %q, but this invocation chose the store of %s scope: try again", t, caps.Scope, d.scope()), "")
	}
	generic := map[string]any{}
	for k, v := range conf.Options {
		generic[k] = v
	}
	options := map[string]any{optGeneric: generic}
	var skip gwAllocCheckReply
	if caps.GwAllocChecker {
		if err := c.Call(ctx, "NetworkDriver.GwAllocCheck", gwAllocCheckRequest{Options: options}, &skip); err != nil {
			return cniError("plugin "+t.String(), err)
		}
	}
	req := createNetworkRequest{NetworkID: nid, Options: options, IPv4Data: []ipamData{}, IPv6Data: []ipamData{}}
	for _, p := range info.Pools {
		data := ipamData{AddressSpace: "LocalDefault", Pool: p.Subnet.String()}
		v4 := p.Subnet.IP.To4() != nil
		if p.Gateway != nil && !(v4 && skip.SkipIPv4) && !(!v4 && skip.SkipIPv6) {
			data.Gateway = (&net.IPNet{IP: p.Gateway, Mask: p.Subnet.Mask}).String()
		}
		if v4 {
			req.IPv4Data = append(req.IPv4Data, data)
		} else {
			req.IPv6Data = append(req.IPv6Data, data)
		}
	}
	options[optEnableIPv6] = len(req.IPv6Data) > 0
	// Recorded first: a call never answered may still have made the
	// network, and the rollback's DeleteNetwork must tell the plugin.
	n := &network{Target: t, Capabilities: caps}
	if err := d.putNetwork(nid, n); err != nil {
		return err
	}
	if err := c.Call(ctx, "NetworkDriver.CreateNetwork", req, nil); err != nil {
		return cniError("plugin "+t.String(), err)
	}
	n.Created = true
	if err := d.putNetwork(nid, n); err != nil {
		return err
	}
	return d.discoverNew(ctx, c, nid, n, conf)
}

// DeleteNetwork implements driverapi.Driver. It fails only when the
// store does: a plugin that does not answer is told later.
func (d *Driver) DeleteNetwork(nid string) error {
	n, err := d.getNetwork(nid)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := d.send(n.Target, nid, "", "NetworkDriver.DeleteNetwork", networkRequest{NetworkID: nid}); err != nil {
		return err
	}
	if err := d.discoverDelete(nid, n); err != nil {
		return err
	}
	return d.hostStore.Update(func(tx store.Tx) error { return tx.Delete(networkKey(nid)) })
}

// ready returns network nid's record and its plugin, activated, once
// what is still owed to the plugin for the network is sent: a Leave
// owed for an endpoint would otherwise undo its next Join when sent.
func (d *Driver) ready(ctx context.Context, nid string) (*network, *dockerplugin.Client, error) {
	n, err := d.getNetwork(nid)
	if err != nil {
		return nil, nil, fmt.Errorf("remote: network %s: %w", nid, err)
	}
	c, err := d.activated(ctx, n.Target)
	if err != nil {
		return nil, nil, cniError("plugin "+n.Target.String(), err)
	}
	if err := d.flush(ctx, nid); err != nil {
		return nil, nil, cniError("plugin "+n.Target.String(), err)
	}
	return n, c, nil
}

// CreateEndpoint implements driverapi.Driver: the plugin gets the
// endpoint's assigned interface and may fill in only what is empty.
func (d *Driver) CreateEndpoint(nid, eid string, epInfo driverapi.EndpointInfo, _ driverapi.Options) (err error) {
	ctx := context.Background()
	n, c, err := d.ready(ctx, nid)
	if err != nil {
		return err
	}
	req := createEndpointRequest{NetworkID: nid, EndpointID: eid, Interface: &endpointInterface{}, Options: map[string]any{}}
	if ifc := epInfo.Interface(); ifc != nil {
		req.Interface = interfaceOf(ifc)
	}
	if err := d.putEndpoint(eid, &endpoint{Network: nid, Host: d.host}); err != nil {
		return err
	}
	var reply createEndpointReply
	if err := c.Call(ctx, "NetworkDriver.CreateEndpoint", req, &reply); err != nil {
		return cniError("plugin "+n.Target.String(), err)
	}
	if err := adopt(epInfo, reply.Interface); err != nil {
		// As the Docker daemon does: the plugin's endpoint is deleted.
		if derr := c.Call(ctx, "NetworkDriver.DeleteEndpoint", endpointRequest{NetworkID: nid, EndpointID: eid}, nil); derr != nil {
			return cniError("plugin "+n.Target.String(), fmt.Errorf("CreateEndpoint: %w; rolling back: %w", err, derr))
		}
		_ = d.store.Update(func(tx store.Tx) error { return tx.Delete(endpointKey(eid)) })
		return cniError("plugin "+n.Target.String(), fmt.Errorf("CreateEndpoint: %w; the plugin's endpoint was deleted", err))
	}
	return nil
}

// interfaceOf is the endpoint's interface as the protocol gives it: one
// address of each family, as CIDRs, and the MAC.
func interfaceOf(ifc driverapi.InterfaceInfo) *endpointInterface {
	out := &endpointInterface{}
	for _, a := range ifc.Addresses() {
		switch {
		case a.IP.To4() != nil && out.Address == "":
			out.Address = a.String()
		case a.IP.To4() == nil && out.AddressIPv6 == "":
			out.AddressIPv6 = a.String()
		}
	}
	if mac := ifc.MacAddress(); mac != nil {
		out.MacAddress = mac.String()
	}
	return out
}

// adopt takes what the plugin filled in of the endpoint's interface,
// refusing a change to what was assigned.
func adopt(epInfo driverapi.EndpointInfo, got *endpointInterface) error {
	if got == nil || *got == (endpointInterface{}) {
		return nil
	}
	var mac net.HardwareAddr
	if got.MacAddress != "" {
		m, err := net.ParseMAC(got.MacAddress)
		if err != nil {
			return fmt.Errorf("%w: MacAddress %q: %v", dockerplugin.ErrMalformed, got.MacAddress, err)
		}
		mac = m
	}
	var addrs []*net.IPNet
	for _, s := range []string{got.Address, got.AddressIPv6} {
		if s == "" {
			continue
		}
		ip, ipn, err := net.ParseCIDR(s)
		if err != nil {
			return fmt.Errorf("%w: address %q is not a CIDR: %v", dockerplugin.ErrMalformed, s, err)
		}
		ipn.IP = ip
		addrs = append(addrs, ipn)
	}
	ifc := epInfo.Interface()
	if ifc == nil {
		return epInfo.AddInterface(mac, addrs)
	}
	assigned := interfaceOf(ifc)
	for _, a := range addrs {
		have := assigned.Address
		if a.IP.To4() == nil {
			have = assigned.AddressIPv6
		}
		switch {
		case have == "":
			return fmt.Errorf("the plugin gave address %s, but the endpoint's addresses are assigned by its IPAM", a)
		case have != a.String():
			return fmt.Errorf("the plugin changed assigned address %s to %s", have, a)
		}
	}
	if mac == nil {
		return nil
	}
	if assigned.MacAddress != "" && assigned.MacAddress != mac.String() {
		return fmt.Errorf("the plugin changed assigned MAC %s to %s", assigned.MacAddress, mac)
	}
	return ifc.SetMacAddress(mac)
}

// DeleteEndpoint implements driverapi.Driver; a plugin that does not
// answer is told later.
func (d *Driver) DeleteEndpoint(nid, eid string) error {
	e, err := d.getEndpoint(eid)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	n, err := d.getNetwork(e.Network)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if n != nil {
		if err := d.send(n.Target, nid, eid, "NetworkDriver.DeleteEndpoint", endpointRequest{NetworkID: nid, EndpointID: eid}); err != nil {
			return err
		}
	}
	return d.store.Update(func(tx store.Tx) error { return tx.Delete(endpointKey(eid)) })
}

// EndpointOperInfo implements driverapi.Driver.
func (d *Driver) EndpointOperInfo(nid, eid string) (map[string]any, error) {
	n, err := d.getNetwork(nid)
	if err != nil {
		return nil, fmt.Errorf("remote: network %s: %w", nid, err)
	}
	c, err := d.client(n.Target)
	if err != nil {
		return nil, cniError("plugin "+n.Target.String(), err)
	}
	var reply endpointOperInfoReply
	err = c.Call(context.Background(), "NetworkDriver.EndpointOperInfo", endpointRequest{NetworkID: nid, EndpointID: eid}, &reply)
	if dockerplugin.IsNotFound(err) {
		return map[string]any{}, nil
	}
	if err != nil {
		return nil, cniError("plugin "+n.Target.String(), err)
	}
	if reply.Value == nil {
		reply.Value = map[string]any{}
	}
	return reply.Value, nil
}
