package ipam

import (
	"encoding/json"
	"fmt"

	"github.com/cnmnet/cnmnet/pkg/confcheck"
)

// The keys of the built-in allocator's section, of a range and of a
// route: what ParseConfig reads.
var (
	ipamKeys  = confcheck.Keys{Names: confcheck.Tags(rawIPAM{})}
	rangeKeys = confcheck.Keys{Names: confcheck.Tags(rawRange{})}
	// types.Route decodes these (through an unexported struct).
	routeKeys = confcheck.Keys{Names: []string{"dst", "gw", "mtu", "advmss", "priority", "table", "scope"}}
)

// UnknownKeys lists the keys of an ipam section (raw, the value of the
// ipam key) that the built-in allocator does not read, in its ranges and
// routes too, as paths from "ipam" (a remote section's, the keys it does
// not read). A delegated section's keys are its plugin's, and not looked at; values of the wrong form are ParseConfig's
// to report, and skipped.
func UnknownKeys(raw json.RawMessage) []confcheck.Unknown {
	obj, ok := confcheck.Object(raw)
	if !ok {
		return nil
	}
	var r rawIPAM
	if json.Unmarshal(raw, &r) != nil {
		return nil
	}
	var typ string
	if json.Unmarshal(r.Type, &typ) == nil && typ == RemoteType {
		return remoteUnknownKeys(obj)
	}
	if json.Unmarshal(r.Type, &typ) == nil && (&Config{Type: typ}).Delegated() {
		return nil
	}
	unknown := ipamKeys.Unknown("ipam", obj)
	var sets [][]json.RawMessage
	if json.Unmarshal(r.Ranges, &sets) == nil {
		for i, set := range sets {
			for j, item := range set {
				if o, ok := confcheck.Object(item); ok {
					unknown = append(unknown, rangeKeys.Unknown(fmt.Sprintf("ipam.ranges[%d][%d]", i, j), o)...)
				}
			}
		}
	}
	var routes []json.RawMessage
	if json.Unmarshal(r.Routes, &routes) == nil {
		for i, item := range routes {
			if o, ok := confcheck.Object(item); ok {
				unknown = append(unknown, routeKeys.Unknown(fmt.Sprintf("ipam.routes[%d]", i), o)...)
			}
		}
	}
	return unknown
}
