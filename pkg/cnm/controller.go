package cnm

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// Controller runs the CNM lifecycle over one open store for the drivers
// registered with it.
type Controller struct {
	store   store.Store
	drivers map[string]driverapi.Driver
	// scopes are the drivers' scopes (driverapi.LocalScope, GlobalScope).
	scopes map[string]string
	// host names this host in a cluster store (NewClustered); "" for a
	// host's own store.
	host string
	// now is the clock; tests move it to expire reservations.
	now func() time.Time
	// cniPath is where delegated IPAM plugins are found when no CNI
	// request says (operations without a runtime).
	cniPath string
	// ipamDrivers serve the ipam types they registered for (remote);
	// any other delegated type is a CNI IPAM plugin.
	ipamDrivers map[string]driverapi.IPAMDriver
}

var (
	_ driverapi.Registerer     = (*Controller)(nil)
	_ driverapi.IPAMRegisterer = (*Controller)(nil)
)

// New returns a Controller over s, a host's own store, with no drivers:
// it serves the networks of local-scope drivers.
func New(s store.Store) *Controller {
	return &Controller{store: s, drivers: map[string]driverapi.Driver{}, scopes: map[string]string{}, now: time.Now,
		ipamDrivers: map[string]driverapi.IPAMDriver{}}
}

// NewClustered returns a Controller over s, a cluster store shared by
// every host, as host sees it: it serves the networks of global-scope
// drivers, whose records every host shares, and keeps what belongs to
// host alone (sandboxes, attachments, host state made) under its name.
func NewClustered(s store.Store, host string) *Controller {
	c := New(hostScoped(s, host))
	c.host = host
	return c
}

// Close closes the controller's store.
func (c *Controller) Close() error { return c.store.Close() }

// Host is the host this controller acts for in a cluster store; "" for
// a host's own store.
func (c *Controller) Host() string { return c.host }

// SetClock replaces the controller's clock.
func (c *Controller) SetClock(now func() time.Time) { c.now = now }

// RegisterDriver implements driverapi.Registerer.
func (c *Controller) RegisterDriver(name string, d driverapi.Driver, capability driverapi.Capability) error {
	if err := ValidateNetworkName(name); err != nil {
		return fmt.Errorf("register driver: name: %w", err)
	}
	if _, ok := c.drivers[name]; ok {
		return driverapi.ErrActiveRegistration(name)
	}
	scope := capability.Scope
	switch scope {
	case "":
		scope = driverapi.LocalScope
	case driverapi.LocalScope, driverapi.GlobalScope:
	default:
		return fmt.Errorf("register driver %s: scope %q is neither %q nor %q", name, scope, driverapi.LocalScope, driverapi.GlobalScope)
	}
	c.drivers[name] = d
	c.scopes[name] = scope
	return nil
}

// RegisterIPAMDriver implements driverapi.IPAMRegisterer: the networks
// whose ipam type is name get their addresses from d.
func (c *Controller) RegisterIPAMDriver(name string, d driverapi.IPAMDriver) error {
	if name == "" || name == ipam.BuiltinType {
		return fmt.Errorf("register ipam driver: name %q is the built-in allocator's", name)
	}
	if _, ok := c.ipamDrivers[name]; ok {
		return fmt.Errorf("an ipam driver is already registered for ipam type %q", name)
	}
	c.ipamDrivers[name] = d
	return nil
}

// DriverStore implements driverapi.Registerer: for a global-scope
// driver, a space every host shares.
func (c *Controller) DriverStore(name string) store.Store {
	return store.Prefixed(c.store, "drivers/"+name+"/")
}

// DriverHostStore implements driverapi.Registerer.
func (c *Controller) DriverHostStore(name string) store.Store {
	return store.Prefixed(c.store, "hostdrivers/"+name+"/")
}

// driver returns the driver of network type typ, if this controller's
// store is where that driver's networks live.
func (c *Controller) driver(typ string) (driverapi.Driver, error) {
	d, ok := c.drivers[typ]
	if !ok {
		return nil, invalidConfig("type: no driver for network type %q in this plugin", typ)
	}
	switch global := c.scopes[typ] == driverapi.GlobalScope; {
	case global && c.host == "":
		return nil, invalidConfig("cluster: network type %q spans hosts: its networks live in a cluster store, which the configuration's cluster section names", typ)
	case !global && c.host != "":
		return nil, invalidConfig("type: network type %q keeps its networks on one host, not in the cluster store", typ)
	}
	return d, nil
}

// Request is one CNI invocation.
type Request struct {
	Conf        *NetConf
	Args        *Args
	ContainerID string
	NetNS       string
	IfName      string
	// Path is CNI_PATH, where delegated IPAM plugins are found.
	Path string
	// RawArgs is CNI_ARGS as the runtime passed it, for delegated plugins.
	RawArgs string
}

// validateAttachment checks the names that reach store keys and the host.
func (r *Request) validateAttachment() error {
	if err := ValidateContainerID(r.ContainerID); err != nil {
		return invalidEnv("CNI_CONTAINERID: %v", err)
	}
	if err := ValidateIfName(r.IfName); err != nil {
		return invalidEnv("CNI_IFNAME: %v", err)
	}
	if r.NetNS != "" {
		if err := validatePath(r.NetNS); err != nil {
			return invalidEnv("CNI_NETNS: %v", err)
		}
	}
	return nil
}

func (r *Request) driverOptions() driverapi.Options {
	return driverapi.Options{Config: r.Conf.Raw, Args: r.Args.All, ContainerID: r.ContainerID, IfName: r.IfName}
}

// networkInfo describes the request's network to its driver. Its pools
// are the subnets of the built-in allocator's ranges or, with delegated
// IPAM, those the plugin gave the network's first endpoint (nw.Pools;
// none when nw is nil or has none yet).
func (c *Controller) networkInfo(conf *NetConf, nw *Network) driverapi.NetworkInfo {
	info := driverapi.NetworkInfo{Name: conf.Name, Config: conf.Raw}
	if conf.IPAMConf == nil {
		return info
	}
	if conf.IPAMConf.Delegated() {
		info.DelegatedIPAM = conf.IPAMConf.Type
		if nw != nil {
			for _, p := range nw.Pools {
				_, subnet, err := net.ParseCIDR(p.Subnet)
				if err != nil {
					continue // recorded by delegatedPools, canonical
				}
				info.Pools = append(info.Pools, driverapi.Pool{Subnet: subnet, Gateway: net.ParseIP(p.Gateway)})
			}
		}
		return info
	}
	// Every subnet of every range set is a pool: a set of several subnets
	// hands out addresses of each, and each needs its gateway and NAT.
	seen := map[string]bool{}
	for _, set := range conf.IPAMConf.Ranges {
		for _, r := range set {
			_, subnet, err := net.ParseCIDR(r.Subnet)
			if err != nil || seen[subnet.String()] {
				continue // ParseConfig made it canonical; ranges may share a subnet
			}
			seen[subnet.String()] = true
			info.Pools = append(info.Pools, driverapi.Pool{Subnet: subnet, Gateway: net.ParseIP(r.Gateway)})
		}
	}
	return info
}

// lookup returns the network and the endpoint attached as the request's
// (container ID, ifname); either is nil when absent.
func (c *Controller) lookup(req *Request) (nw *Network, ep *Endpoint, err error) {
	err = c.store.View(func(tx store.Tx) error {
		name := req.Conf.Name
		if err := store.Prefetch(tx, networkKey(name), hostNetworkKey(name), attachmentKey(name, req.ContainerID, req.IfName)); err != nil {
			return err
		}
		var err error
		nw, err = getNetwork(tx, name)
		if errors.Is(err, store.ErrNotFound) {
			nw = nil
			return nil
		}
		if err != nil {
			return err
		}
		ep, err = endpointOf(tx, req.Conf.Name, req.ContainerID, req.IfName)
		return err
	})
	return nw, ep, err
}

// errorList collects the errors of a best-effort operation.
type errorList []error

func (l *errorList) add(err error) {
	if err != nil {
		*l = append(*l, err)
	}
}

func (l errorList) err(code uint, what string) error {
	if len(l) == 0 {
		return nil
	}
	return &types.Error{Code: code, Msg: fmt.Sprintf("%s: %v", what, errors.Join(l...))}
}
