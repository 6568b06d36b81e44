package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/remote/dockerplugin"
	"github.com/cnmnet/cnmnet/pkg/ipam"
)

// Type is the ipam type the driver serves.
const Type = ipam.RemoteType

// Options and pool data of the protocol, as libnetwork names them.
const (
	optAddressType = "RequestAddressType"
	typeGateway    = "com.docker.network.gateway"
	optMACAddress  = "com.docker.network.endpoint.macaddress"
	dataGateway    = "com.docker.network.gateway"
)

// Driver is the remote IPAM driver.
type Driver struct {
	dirs dockerplugin.Dirs
	// log is where a release the plugin refused is said (stderr).
	log io.Writer

	mu sync.Mutex
	// clients are the plugins activated by this process.
	clients map[target]*dockerplugin.Client
}

var _ driverapi.IPAMDriver = (*Driver)(nil)

// target is how a plugin is reached.
type target struct {
	plugin, socket string
	timeout        string
}

// New returns a driver that finds plugins by name in dirs and says on
// log what a plugin refused to release.
func New(dirs dockerplugin.Dirs, log io.Writer) *Driver {
	return &Driver{dirs: dirs, log: log, clients: map[target]*dockerplugin.Client{}}
}

// Register registers the driver with r, finding plugins where the Docker
// daemon does. A registerer that takes no IPAM drivers (see
// driverapi.IPAMRegisterer) is left as it is.
func Register(r driverapi.Registerer) error {
	return RegisterWithDirs(dockerplugin.DefaultDirs)(r)
}

// RegisterWithDirs is Register with plugins found by name in dirs.
func RegisterWithDirs(dirs dockerplugin.Dirs) func(driverapi.Registerer) error {
	return func(r driverapi.Registerer) error {
		ir, ok := r.(driverapi.IPAMRegisterer)
		if !ok {
			return nil
		}
		return ir.RegisterIPAMDriver(Type, New(dirs, os.Stderr))
	}
}

// section reads the remote ipam section of config: a bad one is error 7
// naming its key.
func section(config []byte) (*ipam.RemoteConfig, error) {
	ic, err := ipam.ParseConfig(config)
	switch {
	case err != nil:
		return nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	case !ic.Remote():
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("ipam.type: want %q for the remote IPAM driver", Type), "")
	}
	return ic.RemoteConf, nil
}

func name(rc *ipam.RemoteConfig) string {
	if rc.Plugin != "" {
		return "ipam plugin " + rc.Plugin
	}
	return "ipam plugin " + rc.Socket
}

// client returns rc's plugin once /Plugin.Activate says it is an IPAM
// driver; it is found anew in each process (a plugin restarted
// elsewhere is found).
func (d *Driver) client(ctx context.Context, rc *ipam.RemoteConfig) (*dockerplugin.Client, error) {
	t := target{plugin: rc.Plugin, socket: rc.Socket, timeout: rc.Timeout.String()}
	d.mu.Lock()
	c, ok := d.clients[t]
	d.mu.Unlock()
	if ok {
		return c, nil
	}
	addr := dockerplugin.SocketAddr(rc.Socket)
	if rc.Plugin != "" {
		a, err := d.dirs.Find(rc.Plugin)
		if err != nil {
			return nil, cniError(name(rc), fmt.Errorf("%w: %w", dockerplugin.ErrUnavailable, err))
		}
		addr = a
	}
	c, err := dockerplugin.New(addr, rc.Timeout)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("%s: %v", name(rc), err), "")
	}
	if err := c.Activate(ctx, dockerplugin.IpamDriver); err != nil {
		return nil, cniError(name(rc), err)
	}
	d.mu.Lock()
	d.clients[t] = c
	d.mu.Unlock()
	return c, nil
}

// cniError gives a plugin call's failure its CNI code: 11 for a plugin
// that did not answer (try again later), 999 with the plugin's message
// for the rest.
func cniError(what string, err error) error {
	var te *types.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
		return err
	case errors.Is(err, dockerplugin.ErrUnavailable):
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: %v", what, err), "")
	default:
		return types.NewError(types.ErrInternal, fmt.Sprintf("%s: %v", what, err), "")
	}
}

// Status implements driverapi.IPAMDriver: the plugin answers Activate.
func (d *Driver) Status(ctx context.Context, config []byte) error {
	_, _, err := d.connect(ctx, config)
	return err
}

// connect reads the remote ipam section of config and gives the client
// of its plugin, activated.
func (d *Driver) connect(ctx context.Context, config []byte) (*ipam.RemoteConfig, *dockerplugin.Client, error) {
	rc, err := section(config)
	if err != nil {
		return nil, nil, err
	}
	c, err := d.client(ctx, rc)
	return rc, c, err
}

type requestPoolRequest struct {
	AddressSpace string
	Pool         string
	SubPool      string
	Options      map[string]string
	V6           bool
}

type requestPoolReply struct {
	PoolID string
	Pool   string
	Data   map[string]string
}

type requestAddressRequest struct {
	PoolID  string
	Address string
	Options map[string]string
}

type requestAddressReply struct {
	Address string
	Data    map[string]string
}

type releaseAddressRequest struct {
	PoolID  string
	Address string
}

// RequestPools implements driverapi.IPAMDriver: GetCapabilities, the
// address space, and RequestPool for each pool of the section with its
// gateway. What a failure leaves reserved is given back.
func (d *Driver) RequestPools(ctx context.Context, config []byte) (_ []driverapi.IPAMPool, err error) {
	rc, c, err := d.connect(ctx, config)
	if err != nil {
		return nil, err
	}
	var caps struct{ RequiresMACAddress bool }
	if err := c.Call(ctx, "IpamDriver.GetCapabilities", struct{}{}, &caps); err != nil {
		return nil, cniError(name(rc), err)
	}
	space := rc.AddressSpace
	if space == "" {
		var spaces struct{ LocalDefaultAddressSpace, GlobalDefaultAddressSpace string }
		if err := c.Call(ctx, "IpamDriver.GetDefaultAddressSpaces", struct{}{}, &spaces); err != nil {
			return nil, cniError(name(rc), err)
		}
		space = spaces.LocalDefaultAddressSpace
	}
	var pools []driverapi.IPAMPool
	defer func() {
		if err != nil {
			for _, p := range pools {
				_ = d.releasePool(ctx, c, rc, p)
			}
		}
	}()
	for i, want := range rc.Pools {
		p, err := d.requestPool(ctx, c, rc, space, want)
		if err != nil {
			return nil, fmt.Errorf("ipam pool %d: %w", i, err)
		}
		pools = append(pools, p)
	}
	return pools, nil
}

// requestPool reserves one pool and settles its gateway.
func (d *Driver) requestPool(ctx context.Context, c *dockerplugin.Client, rc *ipam.RemoteConfig, space string, want ipam.RemotePool) (driverapi.IPAMPool, error) {
	var reply requestPoolReply
	req := requestPoolRequest{AddressSpace: space, Pool: want.Subnet, SubPool: want.IPRange, Options: rc.Options, V6: want.IPv6}
	if err := c.Call(ctx, "IpamDriver.RequestPool", req, &reply); err != nil {
		return driverapi.IPAMPool{}, cniError(name(rc), err)
	}
	p := driverapi.IPAMPool{ID: reply.PoolID}
	subnet, err := netip.ParsePrefix(reply.Pool)
	switch {
	case err != nil || reply.PoolID == "":
		err = fmt.Errorf("RequestPool: %w: pool %q (ID %q) is not a pool in CIDR notation with an ID", dockerplugin.ErrMalformed, reply.Pool, reply.PoolID)
	case want.Subnet != "" && subnet.Masked().String() != want.Subnet:
		err = fmt.Errorf("RequestPool: gave pool %s for subnet %s", subnet, want.Subnet)
	case subnet.Addr().Is6() != want.IPv6:
		err = fmt.Errorf("RequestPool: gave pool %s for an %s pool", subnet, family(want.IPv6))
	}
	if err != nil {
		if reply.PoolID != "" {
			_ = d.releasePool(ctx, c, rc, p)
		}
		return p, cniError(name(rc), err)
	}
	subnet = subnet.Masked()
	p.Subnet = subnet.String()
	gw := want.Gateway
	if gw == "" {
		if g, ok := reply.Data[dataGateway]; ok {
			gp, err := netip.ParsePrefix(g)
			if err != nil || !subnet.Contains(gp.Addr()) {
				_ = d.releasePool(ctx, c, rc, p)
				return p, cniError(name(rc), fmt.Errorf("RequestPool: %w: gateway %q of pool %s", dockerplugin.ErrMalformed, g, subnet))
			}
			p.Gateway = gp.Addr().String()
			return p, nil
		}
	}
	// The gateway is an address of the pool, requested as Docker does.
	var preferred net.IP
	if gw != "" {
		preferred = net.ParseIP(gw)
	}
	a, err := d.requestAddress(ctx, c, rc, p, preferred, map[string]string{optAddressType: typeGateway})
	if err != nil {
		_ = d.releasePool(ctx, c, rc, p)
		return p, err
	}
	p.Gateway, p.GatewayRequested = a.IP.String(), true
	return p, nil
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// ReleasePool implements driverapi.IPAMDriver.
func (d *Driver) ReleasePool(ctx context.Context, config []byte, pool driverapi.IPAMPool) error {
	rc, c, err := d.connect(ctx, config)
	if err != nil {
		return err
	}
	return d.releasePool(ctx, c, rc, pool)
}

func (d *Driver) releasePool(ctx context.Context, c *dockerplugin.Client, rc *ipam.RemoteConfig, p driverapi.IPAMPool) error {
	if p.GatewayRequested {
		if err := d.releaseAddress(ctx, c, rc, p, p.Gateway); err != nil {
			return err
		}
	}
	return d.refused(rc, c.Call(ctx, "IpamDriver.ReleasePool", struct{ PoolID string }{p.ID}, nil))
}

// RequestAddress implements driverapi.IPAMDriver.
func (d *Driver) RequestAddress(ctx context.Context, config []byte, pool driverapi.IPAMPool, preferred net.IP, mac net.HardwareAddr) (*net.IPNet, error) {
	rc, c, err := d.connect(ctx, config)
	if err != nil {
		return nil, err
	}
	opts := map[string]string{}
	if mac != nil {
		opts[optMACAddress] = mac.String()
	}
	return d.requestAddress(ctx, c, rc, pool, preferred, opts)
}

// requestAddress reserves an address of p: preferred if not nil, which
// the plugin must give.
func (d *Driver) requestAddress(ctx context.Context, c *dockerplugin.Client, rc *ipam.RemoteConfig, p driverapi.IPAMPool, preferred net.IP, opts map[string]string) (*net.IPNet, error) {
	req := requestAddressRequest{PoolID: p.ID, Options: opts}
	if preferred != nil {
		req.Address = preferred.String()
	}
	var reply requestAddressReply
	if err := c.Call(ctx, "IpamDriver.RequestAddress", req, &reply); err != nil {
		return nil, cniError(name(rc), err)
	}
	ip, ipn, err := net.ParseCIDR(reply.Address)
	if err != nil {
		return nil, cniError(name(rc), fmt.Errorf("RequestAddress: %w: address %q is not in CIDR notation", dockerplugin.ErrMalformed, reply.Address))
	}
	if preferred != nil && !ip.Equal(preferred) {
		_ = d.releaseAddress(ctx, c, rc, p, ip.String())
		return nil, cniError(name(rc), fmt.Errorf("RequestAddress: gave %s when asked for %s", ip, preferred))
	}
	return &net.IPNet{IP: ip, Mask: ipn.Mask}, nil
}

// ReleaseAddress implements driverapi.IPAMDriver.
func (d *Driver) ReleaseAddress(ctx context.Context, config []byte, pool driverapi.IPAMPool, addr net.IP) error {
	rc, c, err := d.connect(ctx, config)
	if err != nil {
		return err
	}
	return d.releaseAddress(ctx, c, rc, pool, addr.String())
}

func (d *Driver) releaseAddress(ctx context.Context, c *dockerplugin.Client, rc *ipam.RemoteConfig, p driverapi.IPAMPool, addr string) error {
	return d.refused(rc, c.Call(ctx, "IpamDriver.ReleaseAddress", releaseAddressRequest{PoolID: p.ID, Address: addr}, nil))
}

// refused is the outcome of a release: a plugin that answered with an
// error has had its say (it is logged, and the release is done), one
// that did not answer is error 11, so that the release is kept.
func (d *Driver) refused(rc *ipam.RemoteConfig, err error) error {
	var pe *dockerplugin.Error
	if errors.As(err, &pe) {
		fmt.Fprintf(d.log, "%s: %v (not sent again)\n", name(rc), err)
		return nil
	}
	return cniError(name(rc), err)
}
