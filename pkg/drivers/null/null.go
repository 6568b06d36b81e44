package null

import (
	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/driverapi"
)

// NetworkType is the CNI "type" the null driver serves.
const NetworkType = "cnm-null"

// Driver is the null driver.
type Driver struct{}

var (
	_ driverapi.Driver      = (*Driver)(nil)
	_ driverapi.KeyDeclarer = (*Driver)(nil)
)

// Register registers the null driver with r.
func Register(r driverapi.Registerer) error {
	return r.RegisterDriver(NetworkType, &Driver{}, driverapi.Capability{Scope: driverapi.LocalScope})
}

// Type implements driverapi.Driver.
func (*Driver) Type() string { return NetworkType }

// KnownKeys implements driverapi.KeyDeclarer: the null driver reads no
// keys of its own.
func (*Driver) KnownKeys() []string { return nil }

// CreateNetwork implements driverapi.Driver; a null network has no host state.
func (*Driver) CreateNetwork(string, driverapi.NetworkInfo) error { return nil }

// DeleteNetwork implements driverapi.Driver.
func (*Driver) DeleteNetwork(string) error { return nil }

// CreateEndpoint implements driverapi.Driver. A null endpoint has no
// interface to carry an address, so one with addresses is refused rather
// than reserving addresses nothing can use.
func (*Driver) CreateEndpoint(_, eid string, ep driverapi.EndpointInfo, _ driverapi.Options) error {
	if ifc := ep.Interface(); ifc != nil && len(ifc.Addresses()) > 0 {
		return types.NewError(types.ErrInvalidNetworkConfig,
			"ipam: a "+NetworkType+" endpoint has no interface to carry addresses; remove the ipam section", "")
	}
	return nil
}

// DeleteEndpoint implements driverapi.Driver.
func (*Driver) DeleteEndpoint(string, string) error { return nil }

// EndpointOperInfo implements driverapi.Driver; a null endpoint has none.
func (*Driver) EndpointOperInfo(string, string) (map[string]any, error) {
	return map[string]any{}, nil
}

// Join implements driverapi.Driver: the sandbox gets no interface.
func (*Driver) Join(string, string, string, driverapi.JoinInfo, driverapi.Options) error { return nil }

// Leave implements driverapi.Driver.
func (*Driver) Leave(string, string) error { return nil }
