package cnm

import (
	"encoding/json"
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
// the ipam section (LoadNetConf), then the driver's
// (driverapi.ConfigValidator). It needs no store and no host. err is the
// first bad value, a CNI error naming its key; unknown lists every key
// nothing reads.
func CheckConfig(raw []byte, drivers Drivers) (unknown []confcheck.Unknown, err error) {
	conf, err := LoadNetConf(raw)
	if err != nil {
		var typ struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(raw, &typ)
		return UnknownKeys(raw, drivers[typ.Type]), err
	}
	d, ok := drivers[conf.Type]
	if !ok {
		return UnknownKeys(raw, nil), invalidConfig("type: no driver for network type %q", conf.Type)
	}
	unknown = UnknownKeys(raw, d)
	if v, ok := d.(driverapi.ConfigValidator); ok {
		if err := v.ValidateConfig(raw); err != nil {
			return unknown, AsCNIError(err)
		}
	}
	return unknown, nil
}

// Drivers are the drivers of a plugin binary by network type, registered
// without a store: enough to check configurations (KnownKeys,
// ValidateConfig), nothing that keeps state.
type Drivers map[string]driverapi.Driver

var _ driverapi.Registerer = Drivers(nil)

// RegisterDriver implements driverapi.Registerer.
func (ds Drivers) RegisterDriver(name string, d driverapi.Driver, _ driverapi.Capability) error {
	if _, ok := ds[name]; ok {
		return driverapi.ErrActiveRegistration(name)
	}
	ds[name] = d
	return nil
}

// DriverStore implements driverapi.Registerer. There is no store: a
// driver registered here is asked only about configurations.
func (ds Drivers) DriverStore(string) store.Store { return nil }

// DriverHostStore implements driverapi.Registerer, as DriverStore.
func (ds Drivers) DriverHostStore(string) store.Store { return nil }

// Types are the network types of ds, sorted.
func (ds Drivers) Types() []string { return slices.Sorted(maps.Keys(ds)) }
