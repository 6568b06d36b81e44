package remote

// The messages of Docker's network plugin protocol that the driver
// sends and reads (libnetwork's remote driver API). Field names are the
// protocol's.

type ipamData struct {
	AddressSpace string
	Pool         string
	Gateway      string            `json:",omitempty"`
	AuxAddresses map[string]string `json:",omitempty"`
}

type capabilitiesReply struct {
	Scope             string
	ConnectivityScope string
	GwAllocChecker    bool
}

type gwAllocCheckRequest struct {
	Options map[string]any
}

type gwAllocCheckReply struct {
	SkipIPv4, SkipIPv6 bool
}

type createNetworkRequest struct {
	NetworkID string
	Options   map[string]any
	IPv4Data  []ipamData
	IPv6Data  []ipamData
}

type networkRequest struct {
	NetworkID string
}

type endpointInterface struct {
	Address     string `json:",omitempty"`
	AddressIPv6 string `json:",omitempty"`
	MacAddress  string `json:",omitempty"`
}

type createEndpointRequest struct {
	NetworkID  string
	EndpointID string
	Interface  *endpointInterface
	Options    map[string]any
}

type createEndpointReply struct {
	Interface *endpointInterface
}

type endpointRequest struct {
	NetworkID  string
	EndpointID string
}

type endpointOperInfoReply struct {
	Value map[string]any
}

type joinRequest struct {
	NetworkID  string
	EndpointID string
	SandboxKey string
	Options    map[string]any
}

type interfaceName struct {
	SrcName   string
	DstPrefix string
	DstName   string
}

type staticRoute struct {
	Destination string
	RouteType   int
	NextHop     string
}

type joinReply struct {
	InterfaceName         *interfaceName
	Gateway               string
	GatewayIPv6           string
	StaticRoutes          []staticRoute
	DisableGatewayService bool
}

type externalConnectivityRequest struct {
	NetworkID  string
	EndpointID string
	Options    map[string]any `json:",omitempty"`
}

// Route types of a Join's static routes.
const (
	routeNextHop   = 0
	routeConnected = 1
)

// Option keys the Docker daemon sends in CreateNetwork.
const (
	optGeneric    = "com.docker.network.generic"
	optEnableIPv6 = "com.docker.network.enable_ipv6"
)
