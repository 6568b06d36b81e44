package overlay

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/cnmnet/cnmnet/pkg/confcheck"
	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/internal/hostports"
	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/nldump"
)

var (
	_ driverapi.KeyDeclarer     = (*Driver)(nil)
	_ driverapi.ConfigValidator = (*Driver)(nil)
)

// netConf holds the overlay driver's keys of a network configuration.
type netConf struct {
	Name string `json:"name"` // the core's key, read to tell networks apart

	VNI               *int64 `json:"vni,omitempty"`       // nil: allocated cluster-wide
	VXLANPort         *int   `json:"vxlanPort,omitempty"` // nil: dataplane.DefaultPort
	UnderlayInterface string `json:"underlayInterface,omitempty"`
	UnderlayAddress   string `json:"underlayAddress,omitempty"`
	MTU               int    `json:"mtu,omitempty"` // 0: the underlay's less VXLAN's overhead
	IPMasq            *bool  `json:"ipMasq,omitempty"`
	Isolation         *bool  `json:"isolation,omitempty"`

	RuntimeConfig struct {
		PortMappings []hostports.Mapping `json:"portMappings,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// KnownKeys implements driverapi.KeyDeclarer: the driver's own keys.
func (d *Driver) KnownKeys() []string {
	return []string{"vni", "vxlanPort", "underlayInterface", "underlayAddress", "mtu", "ipMasq", "isolation"}
}

func invalid(format string, a ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}

// parseConf decodes and checks the driver's keys on their own: a
// configuration that is not a JSON object is a decoding failure (6), a
// bad value 7 naming its key.
func parseConf(raw []byte) (*netConf, error) {
	if err := confcheck.ObjectError(raw); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode overlay configuration: "+err.Error(), "")
	}
	c := &netConf{}
	if err := confcheck.Decode("", raw, c); err != nil {
		return nil, invalid("%v", err)
	}
	if c.VNI != nil && (*c.VNI < 1 || *c.VNI > dataplane.MaxVNI) {
		return nil, invalid("vni: %d is outside 1..%d (leave it out to have one allocated)", *c.VNI, dataplane.MaxVNI)
	}
	if c.VXLANPort != nil && (*c.VXLANPort < 1 || *c.VXLANPort > 65535) {
		return nil, invalid("vxlanPort: %d is outside 1..65535 (default %d)", *c.VXLANPort, dataplane.DefaultPort)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return nil, invalid("mtu: %d is outside 68..65535", c.MTU)
	}
	if c.UnderlayAddress != "" && net.ParseIP(c.UnderlayAddress) == nil {
		return nil, invalid("underlayAddress: %q is not an IP address", c.UnderlayAddress)
	}
	return c, nil
}

func (c *netConf) port() int {
	if c.VXLANPort == nil {
		return dataplane.DefaultPort
	}
	return *c.VXLANPort
}

func orDefault(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

// ValidateConfig implements driverapi.ConfigValidator. Run by a plugin
// (a driver with a store) it also checks what the keys name on this
// host and in the cluster: the underlay interface and address, and that
// the VNI is not another network's and the network's VNI and port are
// the ones recorded. Without a store (cnmctl validate) it checks the
// values alone.
func (d *Driver) ValidateConfig(raw []byte) error {
	c, err := parseConf(raw)
	if err != nil {
		return err
	}
	if d.store == nil {
		return nil
	}
	iface, ip, err := d.underlay(c)
	if err != nil {
		return err
	}
	if err := c.checkMTU(iface, ip); err != nil {
		return err
	}
	return d.checkClusterKeys(c)
}

// checkMTU refuses an mtu the underlay cannot carry once encapsulated.
func (c *netConf) checkMTU(iface string, vtep net.IP) error {
	if c.MTU == 0 {
		return nil
	}
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("underlay %s: %w", iface, err)
	}
	overhead := 50 // outer IPv4, UDP, VXLAN and inner Ethernet headers
	if vtep.To4() == nil {
		overhead = 70
	}
	if most := link.Attrs().MTU - overhead; c.MTU > most {
		return invalid("mtu: %d is more than underlay %s carries (%d: its MTU %d less %d for VXLAN)",
			c.MTU, iface, most, link.Attrs().MTU, overhead)
	}
	return nil
}

// underlay resolves the VTEP: the interface and address configured, or
// the interface of the default route and its first address.
func (c *netConf) underlay() (iface string, addr net.IP, err error) {
	var link netlink.Link
	if c.UnderlayInterface != "" {
		link, err = netlink.LinkByName(c.UnderlayInterface)
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return "", nil, invalid("underlayInterface: no interface %q on this host", c.UnderlayInterface)
		}
		if err != nil {
			return "", nil, fmt.Errorf("underlayInterface: find %s: %w", c.UnderlayInterface, err)
		}
	}
	if c.UnderlayAddress != "" {
		ip := net.ParseIP(c.UnderlayAddress)
		holder, err := addressHolder(ip)
		if err != nil {
			return "", nil, err
		}
		switch {
		case holder == nil:
			return "", nil, invalid("underlayAddress: %s is not an address of this host", ip)
		case link != nil && holder.Attrs().Index != link.Attrs().Index:
			return "", nil, invalid("underlayAddress: %s is on %s, not on underlayInterface %s", ip, holder.Attrs().Name, c.UnderlayInterface)
		}
		return holder.Attrs().Name, ip, nil
	}
	if link == nil {
		if link, err = defaultRouteLink(); err != nil {
			return "", nil, err
		}
	}
	ip, err := firstAddress(link)
	if err != nil {
		return "", nil, err
	}
	return link.Attrs().Name, ip, nil
}

// addressHolder returns the link that has ip, nil when none has.
func addressHolder(ip net.IP) (netlink.Link, error) {
	addrs, err := nldump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("underlayAddress: list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			link, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("underlayAddress: find the link of %s: %w", ip, err)
			}
			return link, nil
		}
	}
	return nil, nil
}

// defaultRouteLink is the interface of the default route, IPv4's first.
func defaultRouteLink() (netlink.Link, error) {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := nldump.Retry(func() ([]netlink.Route, error) {
			return netlink.RouteListFiltered(fam, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return nil, fmt.Errorf("underlayInterface: list routes: %w", err)
		}
		for _, r := range routes {
			if ones, _ := maskSize(r.Dst); ones == 0 && r.LinkIndex > 0 {
				link, err := netlink.LinkByIndex(r.LinkIndex)
				if err != nil {
					return nil, fmt.Errorf("underlayInterface: find the default route's link: %w", err)
				}
				return link, nil
			}
		}
	}
	return nil, invalid("underlayInterface: not given, and this host has no default route to choose it by")
}

func maskSize(dst *net.IPNet) (int, int) {
	if dst == nil {
		return 0, 0
	}
	return dst.Mask.Size()
}

// firstAddress is the link's first global unicast address, IPv4's first.
func firstAddress(link netlink.Link) (net.IP, error) {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		addrs, err := nldump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(link, fam) })
		if err != nil {
			return nil, fmt.Errorf("underlayAddress: list addresses of %s: %w", link.Attrs().Name, err)
		}
		for _, a := range addrs {
			if a.IP.IsGlobalUnicast() {
				return a.IP, nil
			}
		}
	}
	return nil, invalid("underlayAddress: not given, and underlay interface %s has no address", link.Attrs().Name)
}
