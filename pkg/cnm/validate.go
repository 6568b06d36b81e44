package cnm

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/cnmnet/cnmnet/pkg/confcheck"
	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/ipam"
	"github.com/cnmnet/cnmnet/pkg/store"
)

// cniKeyPrefix marks the keys CNI reserves for runtimes ("cni.dev/…").
const cniKeyPrefix = "cni.dev/"

// ConfigKeys are the keys of a plugin configuration the core reads,
// those CNI itself defines included.
func ConfigKeys() []string { return confcheck.Tags(rawNetConf{}) }

// UnknownKeys lists the keys of a plugin configuration that neither CNI,
// the core, the built-in ipam section nor the driver d reads, each with
// the known key it most likely misspells. CNI allows other keys, so ADD
// does not fail on them; they are said on stderr. The top-level keys are
// checked only when d declares its own (driverapi.KeyDeclarer).
func UnknownKeys(raw []byte, d driverapi.Driver) []confcheck.Unknown {
	top, ok := confcheck.Object(raw)
	if !ok {
		return nil
	}
	var unknown []confcheck.Unknown
	if kd, ok := d.(driverapi.KeyDeclarer); ok {
		keys := confcheck.Keys{Names: ConfigKeys(), Prefixes: []string{cniKeyPrefix}}.With(kd.KnownKeys()...)
		unknown = keys.Unknown("", top)
	}
	var r rawNetConf
	if json.Unmarshal(raw, &r) == nil {
		unknown = append(unknown, ipam.UnknownKeys(r.IPAM)...)
	}
	return unknown
}

// CheckConfig checks a plugin configuration as ADD does before it
// records or touches anything, with the same code: the core's keys and
// the ipam section (LoadNetConf), what a network across hosts needs (a
// cluster section, the built-in allocator), then the driver's
// (driverapi.ConfigValidator). It needs no store and no host. err is the
// first bad value, a CNI error naming its key; unknown lists every key
// nothing reads.
func CheckConfig(raw []byte, drivers *Drivers) (unknown []confcheck.Unknown, err error) {
	conf, err := LoadNetConf(raw)
	if err != nil {
		var typ struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(raw, &typ)
		return UnknownKeys(raw, drivers.Driver(typ.Type)), err
	}
	d := drivers.Driver(conf.Type)
	if d == nil {
		return UnknownKeys(raw, nil), invalidConfig("type: no driver for network type %q", conf.Type)
	}
	unknown = UnknownKeys(raw, d)
	if drivers.Scope(conf.Type) == driverapi.GlobalScope {
		if err := RequireCluster(conf); err != nil {
			return unknown, err
		}
		if err := ipamSpansHosts(conf); err != nil {
			return unknown, err
		}
	}
	if v, ok := d.(driverapi.ConfigValidator); ok {
		if err := v.ValidateConfig(raw); err != nil {
			return unknown, AsCNIError(err)
		}
	}
	return unknown, nil
}

// Drivers are the drivers of a plugin binary by network type, registered
// without a store: enough to check configurations (KnownKeys,
// ValidateConfig, the scope), nothing that keeps state.
type Drivers struct {
	byType map[string]driverapi.Driver
	scope  map[string]string
	ipam   map[string]driverapi.IPAMDriver
}

// NewDrivers returns an empty set, to register drivers with.
func NewDrivers() *Drivers {
	return &Drivers{byType: map[string]driverapi.Driver{}, scope: map[string]string{}, ipam: map[string]driverapi.IPAMDriver{}}
}

var (
	_ driverapi.Registerer     = (*Drivers)(nil)
	_ driverapi.IPAMRegisterer = (*Drivers)(nil)
)

// RegisterIPAMDriver implements driverapi.IPAMRegisterer.
func (ds *Drivers) RegisterIPAMDriver(name string, d driverapi.IPAMDriver) error {
	if _, ok := ds.ipam[name]; ok {
		return fmt.Errorf("an ipam driver is already registered for ipam type %q", name)
	}
	ds.ipam[name] = d
	return nil
}

// IPAMDriver is the IPAM driver of ipam type typ, nil when there is none.
func (ds *Drivers) IPAMDriver(typ string) driverapi.IPAMDriver { return ds.ipam[typ] }

// RegisterDriver implements driverapi.Registerer.
func (ds *Drivers) RegisterDriver(name string, d driverapi.Driver, c driverapi.Capability) error {
	if _, ok := ds.byType[name]; ok {
		return driverapi.ErrActiveRegistration(name)
	}
	ds.byType[name], ds.scope[name] = d, c.Scope
	return nil
}

// DriverStore implements driverapi.Registerer. There is no store: a
// driver registered here is asked only about configurations.
func (ds *Drivers) DriverStore(string) store.Store { return nil }

// DriverHostStore implements driverapi.Registerer, as DriverStore.
func (ds *Drivers) DriverHostStore(string) store.Store { return nil }

// Driver is the driver of network type typ, nil when there is none.
func (ds *Drivers) Driver(typ string) driverapi.Driver { return ds.byType[typ] }

// Scope is the scope the driver of typ registered with, "" for none.
func (ds *Drivers) Scope(typ string) string { return ds.scope[typ] }

// Types are the network types of ds, sorted.
func (ds *Drivers) Types() []string { return slices.Sorted(maps.Keys(ds.byType)) }
