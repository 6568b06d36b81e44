package cnm

import (
	"fmt"
	"net"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/sandbox"
)

// endpointInfo is the driver's view of an endpoint at CreateEndpoint.
type endpointInfo struct {
	ep *Endpoint
	// macHolder names the endpoint of the network that has a MAC, "" if
	// none; nil checks nothing.
	macHolder func(mac string) (string, error)
}

var (
	_ driverapi.EndpointInfo  = (*endpointInfo)(nil)
	_ driverapi.InterfaceInfo = (*interfaceInfo)(nil)
	_ driverapi.JoinInfo      = (*joinInfo)(nil)
)

func (e *endpointInfo) Interface() driverapi.InterfaceInfo {
	if len(e.ep.Addresses) == 0 && e.ep.MAC == "" {
		return nil
	}
	return &interfaceInfo{ep: e.ep, macHolder: e.macHolder}
}

func (e *endpointInfo) AddInterface(mac net.HardwareAddr, addrs []*net.IPNet) error {
	if e.Interface() != nil {
		return driverapi.ErrInterfaceAssigned
	}
	if mac != nil {
		if err := checkMACFree(e.ep, e.macHolder, mac); err != nil {
			return err
		}
		e.ep.MAC = mac.String()
	}
	for _, a := range addrs {
		e.ep.Addresses = append(e.ep.Addresses, Address{Address: a.String()})
	}
	return nil
}

type interfaceInfo struct {
	ep        *Endpoint
	macHolder func(mac string) (string, error)
}

func (i *interfaceInfo) MacAddress() net.HardwareAddr {
	mac, _ := net.ParseMAC(i.ep.MAC)
	return mac
}

func (i *interfaceInfo) SetMacAddress(mac net.HardwareAddr) error {
	if i.ep.MAC != "" && i.ep.MAC != mac.String() {
		return fmt.Errorf("endpoint %s has MAC %s already: %w", i.ep.Name, i.ep.MAC, driverapi.ErrInterfaceAssigned)
	}
	if err := checkMACFree(i.ep, i.macHolder, mac); err != nil {
		return err
	}
	i.ep.MAC = mac.String()
	return nil
}

// checkMACFree fails with driverapi.ErrMACInUse when another endpoint of
// ep's network has mac.
func checkMACFree(ep *Endpoint, holderOf func(string) (string, error), mac net.HardwareAddr) error {
	if holderOf == nil {
		return nil
	}
	holder, err := holderOf(mac.String())
	if err != nil {
		return err
	}
	if holder != "" && holder != ep.Name {
		return fmt.Errorf("%w: %s is endpoint %s's", driverapi.ErrMACInUse, mac, holder)
	}
	return nil
}

func (i *interfaceInfo) Addresses() []*net.IPNet { return i.ep.ipNets() }

// joinInfo collects what a driver sets at Join.
type joinInfo struct {
	ep               *Endpoint
	srcName, dstName string
	inSandbox        bool
	gw4, gw6         net.IP
	routes           []Route
	dns              *DNS
	hostIfaces       []HostInterface
}

func (j *joinInfo) Interface() driverapi.InterfaceInfo {
	return (&endpointInfo{ep: j.ep}).Interface()
}

func (j *joinInfo) SetNames(srcName, dstName string) error {
	if srcName == "" || dstName == "" {
		return fmt.Errorf("set names: source and destination names are both required")
	}
	j.srcName, j.dstName = srcName, dstName
	return nil
}

func (j *joinInfo) SetNamesInSandbox(srcName, dstName string) error {
	if err := j.SetNames(srcName, dstName); err != nil {
		return err
	}
	j.inSandbox = true
	return nil
}

func (j *joinInfo) SetGateway(gw net.IP) error {
	if gw.To4() == nil {
		return fmt.Errorf("set gateway: %s is not an IPv4 address", gw)
	}
	j.gw4 = gw
	return nil
}

func (j *joinInfo) SetGatewayIPv6(gw net.IP) error {
	if gw.To4() != nil || gw.To16() == nil {
		return fmt.Errorf("set IPv6 gateway: %s is not an IPv6 address", gw)
	}
	j.gw6 = gw
	return nil
}

func (j *joinInfo) AddStaticRoute(dst *net.IPNet, nextHop net.IP) error {
	r := Route{Dst: dst.String()}
	if nextHop != nil {
		r.GW = nextHop.String()
	}
	j.routes = append(j.routes, r)
	return nil
}

func (j *joinInfo) SetDNS(nameservers, search, options []string, domain string) error {
	j.dns = &DNS{Nameservers: nameservers, Search: search, Options: options, Domain: domain}
	return nil
}

func (j *joinInfo) AddHostInterface(name string, mac net.HardwareAddr) error {
	h := HostInterface{Name: name}
	if mac != nil {
		h.MAC = mac.String()
	}
	j.hostIfaces = append(j.hostIfaces, h)
	return nil
}

// record writes what the driver set into the attachment: the names, the
// routes in the sandbox (the driver's, the IPAM config's, and a default
// route per gateway), DNS and host interfaces.
func (j *joinInfo) record(a *Attachment, ic *ipam.Config) {
	a.SrcName, a.DstName, a.InSandbox = j.srcName, j.dstName, j.inSandbox
	a.DNS = j.dns
	a.HostInterfaces = j.hostIfaces
	a.Routes = nil
	if j.dstName == "" {
		return
	}
	seen := map[string]bool{}
	add := func(r Route) {
		if !seen[r.Dst] {
			seen[r.Dst] = true
			a.Routes = append(a.Routes, r)
		}
	}
	for _, r := range j.routes {
		add(r)
	}
	if ic != nil {
		for _, r := range ic.Routes {
			gw := j.gatewayFor(r.Dst.IP)
			if r.GW != nil {
				gw = r.GW
			}
			route := Route{Dst: r.Dst.String()}
			if gw != nil {
				route.GW = gw.String()
			}
			add(route)
		}
	}
	if j.gw4 != nil {
		add(Route{Dst: "0.0.0.0/0", GW: j.gw4.String()})
	}
	if j.gw6 != nil {
		add(Route{Dst: "::/0", GW: j.gw6.String()})
	}
}

// gatewayFor returns the gateway of ip's family: the driver's, else the
// endpoint's address pool's.
func (j *joinInfo) gatewayFor(ip net.IP) net.IP {
	v4 := ip.To4() != nil
	if v4 && j.gw4 != nil {
		return j.gw4
	}
	if !v4 && j.gw6 != nil {
		return j.gw6
	}
	for _, a := range j.ep.Addresses {
		gw := net.ParseIP(a.Gateway)
		if gw != nil && (gw.To4() != nil) == v4 {
			return gw
		}
	}
	return nil
}

// sandboxInterface is what the core configures in the sandbox for ep.
func sandboxInterface(ep *Endpoint) sandbox.Interface {
	a := ep.Sandbox
	ifc := sandbox.Interface{SrcName: a.SrcName, DstName: a.DstName, InSandbox: a.InSandbox, Addresses: ep.ipNets()}
	if mac, err := net.ParseMAC(ep.MAC); err == nil {
		ifc.MAC = mac
	}
	for _, r := range a.Routes {
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			continue
		}
		ifc.Routes = append(ifc.Routes, sandbox.Route{Dst: dst, GW: net.ParseIP(r.GW)})
	}
	return ifc
}
