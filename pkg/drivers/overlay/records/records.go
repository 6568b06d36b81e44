// Package records is what the overlay's plugin (cnm-overlay) and its
// daemon (cnm-overlayd) share through the cluster store: the network's
// VXLAN parameters, and where each joined endpoint is — its MAC, its
// addresses and its host's VTEP — from which every other host programs
// its forwarding entries.
//
// Keys are store keys of the driver's space, under
// "drivers/cnm-overlay/" in the cluster store (etcd key
// "<prefix>/data/drivers/cnm-overlay/<key>"):
//
//	networks/<network id>   Network, written by the network's first CreateNetwork
//	names/<network name>    its network id (networks before this index have none)
//	vnis/<vni>              the network id holding the VNI (unique cluster-wide)
//	peers/<network id>/<endpoint id>
//	                        Peer, written by Join on the endpoint's host,
//	                        deleted by its Leave there (only if it names that host)
//
// A host's own part (DriverHostStore, under "hosts/<host>/hostdrivers/cnm-overlay/"):
//
//	networks/<network id>   HostNetwork: the links made on this host
package records

import (
	"fmt"
	"net"
	"strconv"

	"github.com/cnmnet/cnmnet/pkg/drivers/overlay/dataplane"
	"github.com/cnmnet/cnmnet/pkg/firewall"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// NetworkType is the CNI type of the overlay.
const NetworkType = "cnm-overlay"

// HostLockFile serialises, across the processes of one host (the
// plugin's invocations and cnm-overlayd), the changes to the overlay's
// data plane there: package dataplane does not lock, and a plugin's
// Reconcile of a network racing a daemon's would undo the other's
// entries. Take it (pkg/hostlock) around each dataplane change.
const HostLockFile = "/run/cnmnet/overlay.lock"

// StorePrefix is the driver's space in the cluster store, as a store key.
const StorePrefix = "drivers/" + NetworkType + "/"

// Network is an overlay network's cluster-wide parameters.
type Network struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	VNI  uint32 `json:"vni"`
	Port int    `json:"port"`
	// Gateways are the gateway addresses (CIDR) on every host's bridge.
	Gateways []string `json:"gateways,omitempty"`
	// Subnets are the network's subnets (CIDR).
	Subnets []string `json:"subnets,omitempty"`
}

// HostNetwork is what one host made for a network.
type HostNetwork struct {
	Bridge   string `json:"bridge"`
	VXLAN    string `json:"vxlan"`
	Underlay string `json:"underlay"`
	LocalIP  string `json:"localIP"`
	MTU      int    `json:"mtu"`

	// Host is this host's name in the cluster store (Peer.Host of the
	// endpoints joined here). Name, Subnets, IPMasq and Isolation say the
	// network's firewall rules here; VNI, Port and Gateways its VXLAN
	// device and bridge as made here (copies of the Network's): enough
	// to check or remove this host's part when the cluster record is
	// gone or unreachable.
	Host      string   `json:"host,omitempty"`
	Name      string   `json:"name,omitempty"`
	VNI       uint32   `json:"vni,omitempty"`
	Port      int      `json:"port,omitempty"`
	Subnets   []string `json:"subnets,omitempty"`
	Gateways  []string `json:"gateways,omitempty"`
	IPMasq    bool     `json:"ipMasq,omitempty"`
	Isolation bool     `json:"isolation,omitempty"`
}

// Peer is a joined endpoint as the other hosts program it.
type Peer struct {
	Network  string   `json:"network"`  // network id
	Endpoint string   `json:"endpoint"` // endpoint id
	Host     string   `json:"host"`
	VTEP     string   `json:"vtep"`
	MAC      string   `json:"mac"`
	IPs      []string `json:"ips"` // addresses, without prefix length
}

// NetworkKey, NameKey, VNIKey and PeerKey are keys of the driver's
// cluster space; PeerPrefix lists a network's peers, PeersPrefix every
// network's.
func NetworkKey(nid string) string     { return "networks/" + nid }
func NameKey(name string) string       { return "names/" + name }
func VNIKey(vni uint32) string         { return "vnis/" + strconv.FormatUint(uint64(vni), 10) }
func PeerKey(nid, eid string) string   { return PeerPrefix(nid) + eid }
func PeerPrefix(nid string) string     { return PeersPrefix + nid + "/" }
func HostNetworkKey(nid string) string { return "networks/" + nid }

// PeersPrefix is where every network's peers are.
const PeersPrefix = "peers/"

// ParseIPs parses a peer's addresses, skipping what does not parse.
func (p *Peer) ParseIPs() []net.IP {
	var out []net.IP
	for _, s := range p.IPs {
		if ip := net.ParseIP(s); ip != nil {
			out = append(out, ip)
		}
	}
	return out
}

// Firewall is the network as package firewall takes it, the same for
// the plugin that makes its rules and the daemon that removes them when
// the network is deleted elsewhere: masquerade and isolation by the
// bridge, traffic between its endpoints always allowed.
func (h *HostNetwork) Firewall() firewall.Network {
	fn := firewall.Network{Name: h.Name, Bridge: h.Bridge, IPMasq: h.IPMasq, Isolation: h.Isolation, ICC: true}
	for _, s := range h.Subnets {
		if _, sn, err := net.ParseCIDR(s); err == nil {
			fn.Subnets = append(fn.Subnets, sn)
		}
	}
	return fn
}

// Dataplane is network nid's part on this host as package dataplane
// takes it.
func (h *HostNetwork) Dataplane(nid string) (dataplane.Network, error) {
	n := dataplane.Network{ID: nid, Bridge: h.Bridge, VXLAN: h.VXLAN, VNI: h.VNI, Port: h.Port,
		Underlay: h.Underlay, LocalIP: net.ParseIP(h.LocalIP), MTU: h.MTU}
	for _, g := range h.Gateways {
		ip, sn, err := net.ParseCIDR(g)
		if err != nil {
			return n, fmt.Errorf("%w: overlay network %s: gateway %q: %v", store.ErrCorrupt, nid, g, err)
		}
		sn.IP = ip
		n.Gateways = append(n.Gateways, sn)
	}
	return n, nil
}
