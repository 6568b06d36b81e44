package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/cnmnet/cnmnet/pkg/confcheck"
)

// RemoteType is the ipam.type of an IPAM plugin of Docker's IpamDriver
// protocol. The core serves it through the IPAM driver a plugin binary
// registers for it (pkg/ipam/remote); its section is parsed here, so
// that a bad value is refused before an ADD changes anything.
const RemoteType = "remote"

// Bounds and default of ipam.timeout, as the remote driver's timeout.
const (
	RemoteMinTimeout     = 10 * time.Millisecond
	RemoteMaxTimeout     = 5 * time.Minute
	RemoteDefaultTimeout = 10 * time.Second
)

// RemoteConfig is a remote ipam section.
type RemoteConfig struct {
	// Plugin names the plugin as the Docker daemon finds it; Socket is
	// the path of its socket instead.
	Plugin string `json:"plugin,omitempty"`
	Socket string `json:"socket,omitempty"`
	// Timeout is the deadline of each call.
	Timeout time.Duration `json:"timeout"`
	// AddressSpace is passed to RequestPool; "" asks the plugin's local
	// default (GetDefaultAddressSpaces).
	AddressSpace string `json:"addressSpace,omitempty"`
	// Pools are requested in order at the network's first ADD; an
	// endpoint gets an address of each.
	Pools []RemotePool `json:"pools"`
	// Options are RequestPool's (docker network create --ipam-opt).
	Options map[string]string `json:"options,omitempty"`
}

// RemotePool is a pool to request: a subnet and part of it, or the
// plugin's choice of the family.
type RemotePool struct {
	Subnet  string `json:"subnet,omitempty"`
	IPRange string `json:"ipRange,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	IPv6    bool   `json:"ipv6,omitempty"`
}

type rawRemote struct {
	Type         json.RawMessage `json:"type"`
	Plugin       json.RawMessage `json:"plugin"`
	Socket       json.RawMessage `json:"socket"`
	Timeout      json.RawMessage `json:"timeout"`
	AddressSpace json.RawMessage `json:"addressSpace"`
	Subnet       json.RawMessage `json:"subnet"`
	IPRange      json.RawMessage `json:"ipRange"`
	Gateway      json.RawMessage `json:"gateway"`
	IPv6         json.RawMessage `json:"ipv6"`
	Pools        json.RawMessage `json:"pools"`
	Options      json.RawMessage `json:"options"`
}

type rawRemotePool struct {
	Subnet  json.RawMessage `json:"subnet"`
	IPRange json.RawMessage `json:"ipRange"`
	Gateway json.RawMessage `json:"gateway"`
	IPv6    json.RawMessage `json:"ipv6"`
}

var (
	remoteKeys     = confcheck.Keys{Names: confcheck.Tags(rawRemote{})}
	remotePoolKeys = confcheck.Keys{Names: confcheck.Tags(rawRemotePool{})}
)

// Remote reports whether the addresses come from a remote IPAM plugin.
func (c *Config) Remote() bool { return c != nil && c.Type == RemoteType }

// parseRemote reads a remote ipam section (raw, the value of ipam).
func parseRemote(raw json.RawMessage) (*RemoteConfig, error) {
	var r rawRemote
	if err := decodeAt("ipam", raw, &r); err != nil {
		return nil, err
	}
	rc := &RemoteConfig{Timeout: RemoteDefaultTimeout}
	var timeout string
	err := decodeFields("ipam",
		field{"plugin", r.Plugin, &rc.Plugin},
		field{"socket", r.Socket, &rc.Socket},
		field{"timeout", r.Timeout, &timeout},
		field{"addressSpace", r.AddressSpace, &rc.AddressSpace},
		field{"options", r.Options, &rc.Options})
	if err != nil {
		return nil, err
	}
	if err := rc.checkTarget(); err != nil {
		return nil, err
	}
	if timeout != "" {
		d, err := time.ParseDuration(timeout)
		if err != nil || d < RemoteMinTimeout || d > RemoteMaxTimeout {
			return nil, configErr("ipam.timeout", "%q is not a duration from %s to %s such as \"10s\"", timeout, RemoteMinTimeout, RemoteMaxTimeout)
		}
		rc.Timeout = d
	}
	pools, err := remotePools(r)
	if err != nil {
		return nil, err
	}
	rc.Pools = pools
	return rc, nil
}

func (rc *RemoteConfig) checkTarget() error {
	switch {
	case rc.Plugin == "" && rc.Socket == "":
		return configErr("ipam.plugin", "required: the IPAM plugin's name (or ipam.socket: the path of its socket)")
	case rc.Plugin != "" && rc.Socket != "":
		return configErr("ipam.socket", "give ipam.plugin or ipam.socket, not both")
	case rc.Plugin != "":
		return checkPluginName(rc.Plugin)
	case !filepath.IsAbs(rc.Socket) || filepath.Clean(rc.Socket) != rc.Socket:
		return configErr("ipam.socket", "%q: want an absolute, clean path", rc.Socket)
	}
	return nil
}

// checkPluginName holds a plugin name to a file name, as the Docker
// daemon's lookup needs.
func checkPluginName(name string) error {
	switch {
	case len(name) > 128:
		return configErr("ipam.plugin", "%.16q… is longer than 128 characters", name)
	case name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00"):
		return configErr("ipam.plugin", "%q is not a file name", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return configErr("ipam.plugin", "%q has a control character", name)
		}
	}
	return nil
}

// remotePools reads the pools: the list, or the shorthand at the top of
// the section as one pool; none is one IPv4 pool of the plugin's choice.
func remotePools(r rawRemote) ([]RemotePool, error) {
	short := rawRemotePool{Subnet: r.Subnet, IPRange: r.IPRange, Gateway: r.Gateway, IPv6: r.IPv6}
	hasShort := !isAbsent(r.Subnet) || !isAbsent(r.IPRange) || !isAbsent(r.Gateway) || !isAbsent(r.IPv6)
	if isAbsent(r.Pools) {
		p, err := remotePool("ipam", short)
		if err != nil {
			return nil, err
		}
		return []RemotePool{p}, nil
	}
	if hasShort {
		return nil, configErr("ipam.pools", "give pools or subnet, ipRange, gateway and ipv6 at the top of ipam, not both")
	}
	var items []json.RawMessage
	if json.Unmarshal(r.Pools, &items) != nil || len(items) == 0 {
		return nil, configErr("ipam.pools", `want a list of pools such as [{"subnet": "10.1.0.0/24"}, {"ipv6": true}], got %s`, confcheck.Shorten(r.Pools))
	}
	var pools []RemotePool
	for i, item := range items {
		path := fmt.Sprintf("ipam.pools[%d]", i)
		if _, ok := confcheck.Object(item); !ok {
			return nil, configErr(path, `want a pool, an object such as {"subnet": "10.1.0.0/24"}, got %s`, confcheck.Shorten(item))
		}
		var rp rawRemotePool
		if err := decodeAt(path, item, &rp); err != nil {
			return nil, err
		}
		p, err := remotePool(path, rp)
		if err != nil {
			return nil, err
		}
		for j, q := range pools {
			if p.Subnet != "" && p.Subnet == q.Subnet {
				return nil, configErr(path+".subnet", "%s is ipam.pools[%d]'s too", p.Subnet, j)
			}
		}
		pools = append(pools, p)
	}
	return pools, nil
}

func remotePool(path string, r rawRemotePool) (RemotePool, error) {
	var p RemotePool
	err := decodeFields(path,
		field{"subnet", r.Subnet, &p.Subnet},
		field{"ipRange", r.IPRange, &p.IPRange},
		field{"gateway", r.Gateway, &p.Gateway},
		field{"ipv6", r.IPv6, &p.IPv6})
	if err != nil {
		return p, err
	}
	if p.Subnet == "" {
		for _, f := range []struct{ name, v string }{{"ipRange", p.IPRange}, {"gateway", p.Gateway}} {
			if f.v != "" {
				return p, configErr(path+".subnet", "missing, but %s.%s is set", path, f.name)
			}
		}
		return p, nil
	}
	subnet, err := parseSubnet(path+".subnet", p.Subnet)
	if err != nil {
		return p, err
	}
	p.Subnet = subnet.String()
	if r.IPv6 != nil && p.IPv6 != subnet.Addr().Is6() {
		return p, configErr(path+".ipv6", "%v, but subnet %s is %s", p.IPv6, subnet, family(subnet.Addr()))
	}
	p.IPv6 = subnet.Addr().Is6()
	if p.IPRange != "" {
		sub, err := netip.ParsePrefix(p.IPRange)
		if err != nil || sub.Masked() != sub {
			return p, configErr(path+".ipRange", "%q is not a subnet in CIDR notation", p.IPRange)
		}
		if sub.Bits() < subnet.Bits() || !subnet.Contains(sub.Addr()) {
			return p, configErr(path+".ipRange", "%s is not inside subnet %s", sub, subnet)
		}
		p.IPRange = sub.String()
	}
	if p.Gateway != "" {
		gw, err := parseAddrIn(path+".gateway", p.Gateway, subnet, netip.Addr{})
		if err != nil {
			return p, err
		}
		p.Gateway = gw.String()
	}
	return p, nil
}

// remoteUnknownKeys lists the keys of a remote section nothing reads.
func remoteUnknownKeys(obj map[string]json.RawMessage) []confcheck.Unknown {
	unknown := remoteKeys.Unknown("ipam", obj)
	var pools []json.RawMessage
	if raw, ok := obj["pools"]; ok && json.Unmarshal(raw, &pools) == nil {
		for i, item := range pools {
			if o, ok := confcheck.Object(item); ok {
				unknown = append(unknown, remotePoolKeys.Unknown(fmt.Sprintf("ipam.pools[%d]", i), o)...)
			}
		}
	}
	return unknown
}
