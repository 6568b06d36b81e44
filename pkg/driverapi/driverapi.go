package driverapi

import (
	"errors"
	"fmt"
	"net"

	"github.com/cnmnet/cnmnet/pkg/store"
)

var (
	// ErrInterfaceAssigned is returned by EndpointInfo.AddInterface when
	// the endpoint already has an interface: a driver may not replace it.
	ErrInterfaceAssigned = errors.New("endpoint already has an interface")
	// ErrNoInterface is returned by JoinInfo methods that configure the
	// interface of an endpoint that has none.
	ErrNoInterface = errors.New("endpoint has no interface")
	// ErrMACInUse is returned by SetMacAddress and AddInterface for a MAC
	// another endpoint of the network has: a MAC is unique in its network
	// like an address. A driver that derives MACs tries another.
	ErrMACInUse = errors.New("MAC address held by another endpoint of the network")
)

// Error codes of this project, above the range the CNI spec reserves,
// shared by the core and the drivers.
const (
	// CodeAddressInUse: a requested address is held by another endpoint.
	CodeAddressInUse uint = 100
	// CodeEndpointInUse: the endpoint is joined to another live sandbox.
	CodeEndpointInUse uint = 101
	// CodePoolExhausted: no free address is left in a range set.
	CodePoolExhausted uint = 102
	// CodeInterfaceExists: the sandbox already has an interface of that name.
	CodeInterfaceExists uint = 103
	// CodePortInUse: a host port is already published by another endpoint.
	CodePortInUse uint = 104
	// CodeReservationLimit: the network holds as many persistent
	// endpoints as its configuration allows.
	CodeReservationLimit uint = 105
)

// Driver manages the networks and endpoints of one network type.
// Every method must be idempotent: the core calls them again after a
// plugin process died half-way, and Leave, DeleteEndpoint and
// DeleteNetwork must succeed when what they remove is already gone.
type Driver interface {
	// Type is the network type this driver manages.
	Type() string

	// CreateNetwork sets up the host state of a network (bridges,
	// tunnels, firewall chains), on the network's first use.
	CreateNetwork(nid string, net NetworkInfo) error
	// DeleteNetwork removes the host state of a network.
	DeleteNetwork(nid string) error

	// CreateEndpoint reserves the driver's resources for an endpoint.
	// epInfo carries the endpoint's interface if one is assigned.
	CreateEndpoint(nid, eid string, epInfo EndpointInfo, opts Options) error
	// DeleteEndpoint releases what CreateEndpoint reserved.
	DeleteEndpoint(nid, eid string) error
	// EndpointOperInfo returns the operational data of an endpoint, such
	// as its published ports.
	EndpointOperInfo(nid, eid string) (map[string]any, error)

	// Join attaches the endpoint to the sandbox whose key (netns path) is
	// sboxKey, naming through jinfo the interface the core moves there.
	Join(nid, eid, sboxKey string, jinfo JoinInfo, opts Options) error
	// Leave detaches the endpoint from its sandbox. The sandbox may be
	// gone already.
	Leave(nid, eid string) error
}

// NetworkInfo describes a network to its driver.
type NetworkInfo struct {
	// Name is the CNI network name.
	Name string
	// Config is the network configuration as the runtime passed it, for
	// the driver's own keys.
	Config []byte
	// Pools are the network's address pools, one per subnet of its
	// address ranges. With delegated IPAM they are those of the first
	// endpoint's addresses, as the plugin gave them (the subnet of each
	// address's prefix, and its gateway); Status gets none.
	Pools []Pool
	// DelegatedIPAM is the type of the IPAM plugin that hands out the
	// network's addresses ("host-local"); "" when the core's built-in
	// allocator does, or the network has none.
	DelegatedIPAM string
}

// Pool is one address pool of a network.
type Pool struct {
	Subnet  *net.IPNet
	Gateway net.IP
}

// Options carry the request that led to a driver call.
type Options struct {
	// Config is the network configuration of this request, including
	// runtimeConfig, for the driver's own keys.
	Config []byte
	// Args are the CNI_ARGS of this request.
	Args map[string]string
	// ContainerID and IfName identify the attachment.
	ContainerID string
	IfName      string
	// Endpoint is the endpoint's name, as `cnmctl endpoint ls` shows it
	// (set for Join), for messages that name it to another request.
	Endpoint string
}

// EndpointInfo gives a driver the endpoint's interface, or lets it add
// one when none is assigned.
type EndpointInfo interface {
	// Interface returns the endpoint's interface, nil if it has none.
	Interface() InterfaceInfo
	// AddInterface assigns the endpoint an interface. It fails with
	// ErrInterfaceAssigned if one is assigned already.
	AddInterface(mac net.HardwareAddr, addrs []*net.IPNet) error
}

// InterfaceInfo is the endpoint's one interface.
type InterfaceInfo interface {
	// MacAddress returns the MAC address, nil if none is assigned yet.
	MacAddress() net.HardwareAddr
	// SetMacAddress assigns a MAC address when none is; it fails when
	// one is already assigned and differs.
	SetMacAddress(net.HardwareAddr) error
	// Addresses returns the assigned addresses with their prefix length.
	Addresses() []*net.IPNet
}

// JoinInfo lets a driver describe, at Join, what the sandbox gets.
type JoinInfo interface {
	// Interface returns the endpoint's interface (addresses and MAC), nil
	// if it has none.
	Interface() InterfaceInfo
	// SetNames names the interface the driver created in the host
	// namespace (srcName) and the name it gets inside the sandbox
	// (dstName, normally CNI_IFNAME). The core moves and renames it.
	SetNames(srcName, dstName string) error
	// SetNamesInSandbox is SetNames for an interface the driver created
	// inside the sandbox already (a veth whose peer it made there):
	// moving a link between namespaces costs the kernel far more than
	// making it in place. The core renames and configures it. The
	// driver's Leave must remove it with its host side (deleting a veth's
	// host end deletes its peer): after a crash the core may not know its
	// name.
	SetNamesInSandbox(srcName, dstName string) error
	// SetGateway sets the IPv4 default gateway of the sandbox.
	SetGateway(net.IP) error
	// SetGatewayIPv6 sets the IPv6 default gateway of the sandbox.
	SetGatewayIPv6(net.IP) error
	// AddStaticRoute adds a route in the sandbox through the interface;
	// a nil nextHop makes it a link route.
	AddStaticRoute(dst *net.IPNet, nextHop net.IP) error
	// SetDNS sets the DNS settings reported to the runtime.
	SetDNS(nameservers, search, options []string, domain string) error
	// AddHostInterface reports an interface the driver keeps in the host
	// namespace for this endpoint (a bridge, a veth peer), so that the
	// result lists it for chained plugins.
	AddHostInterface(name string, mac net.HardwareAddr) error
}

// Checker is implemented by drivers that can verify the host state of a
// joined endpoint for CNI CHECK.
type Checker interface {
	CheckEndpoint(nid, eid, sboxKey string) error
}

// StatusReporter is implemented by drivers that can tell whether they
// are able to serve a new endpoint (CNI STATUS).
type StatusReporter interface {
	Status(net NetworkInfo) error
}

// Capability describes what a driver needs of the core.
type Capability struct {
	// Scope is "local" for a driver whose state is confined to one host,
	// "global" for one whose endpoints span hosts.
	Scope string
}

const (
	// LocalScope drivers keep state on one host.
	LocalScope = "local"
	// GlobalScope drivers share state across hosts.
	GlobalScope = "global"
)

// Registerer is the callback each driver package is handed to register
// its drivers with a controller.
type Registerer interface {
	// RegisterDriver adds driver for the network type name.
	RegisterDriver(name string, driver Driver, capability Capability) error
	// DriverStore returns a private, persistent key space for the driver
	// of type name, to keep state across plugin invocations. For a
	// global-scope driver every host shares it.
	DriverStore(name string) store.Store
	// DriverHostStore returns a private, persistent key space for what
	// the driver of type name keeps about this host alone (the names of
	// its links here, say): for a global-scope driver, this host's part
	// of the cluster store.
	DriverHostStore(name string) store.Store
}

// ErrActiveRegistration is returned when a network type is registered twice.
type ErrActiveRegistration string

func (e ErrActiveRegistration) Error() string {
	return fmt.Sprintf("a driver is already registered for network type %q", string(e))
}

// Janitor is implemented by drivers that can find host state of theirs
// that no endpoint owns: what a crash or a hand left behind (cnmctl
// check).
type Janitor interface {
	// Orphans lists what the driver made on this host for network nid
	// that none of the endpoints eids owns.
	Orphans(nid string, eids []string) ([]Orphan, error)
	// RemoveOrphans removes what Orphans listed.
	RemoveOrphans(nid string, orphans []Orphan) error
}

// Orphan is one piece of host state that no endpoint owns.
type Orphan struct {
	// Kind is "link", "rule", "port" or "firewall".
	Kind string `json:"kind"`
	// Name names it: a link name, an endpoint ID in a rule's comment, a
	// reserved host port, the firewall ("iptables").
	Name string `json:"name"`
	// Problem says what is wrong when it is not that no endpoint owns it
	// (missing firewall rules, say); "" for an orphan.
	Problem string `json:"problem,omitempty"`
}

// NetworkDescriber is implemented by drivers that can describe a
// network's host state (its bridge, say) for operators.
type NetworkDescriber interface {
	NetworkOperInfo(nid string) (map[string]any, error)
}

// NetworkUpdater is implemented by drivers that can apply an edited
// configuration to a network that exists. The core calls it on every ADD
// of a network whose driver made it, before anything of the ADD is
// recorded or changed: the configuration of the latest successful ADD is
// the network's, so it must be the one in force.
type NetworkUpdater interface {
	// UpdateNetwork makes network nid's host state and the driver's
	// record what info describes. What it cannot change in place it
	// refuses, before changing anything, with a CNI error (7) naming the
	// key and saying how to change it. It returns how to put back what it
	// changed, nil when it changed nothing: the core calls undo when the
	// ADD fails after all, so that a refused ADD changes nothing.
	UpdateNetwork(nid string, info NetworkInfo) (undo func() error, err error)
}

// ConfigValidator is implemented by drivers that can check their own keys
// of a network configuration on their own. The core calls it before an
// ADD records or touches anything, so that a bad value is refused with
// nothing to undo; the error should be a CNI error naming the key.
type ConfigValidator interface {
	ValidateConfig(config []byte) error
}

// KeyDeclarer is implemented by drivers that declare the keys of a
// network configuration they read besides the core's, so that a key
// nobody reads (a misspelt one, most often) is named on ADD and by
// cnmctl validate. A driver that does not declare its keys gets none of
// the top-level keys checked.
type KeyDeclarer interface {
	KnownKeys() []string
}
