package hostports

import (
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Mapping is one entry of the portMappings capability, as the runtime
// passes it in runtimeConfig.
type Mapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Port is a mapping resolved for one container address.
type Port struct {
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"` // "" = every host address of the family
	HostPort      int    `json:"hostPort"`
	ContainerIP   string `json:"containerIP"`
	ContainerPort int    `json:"containerPort"`
}

func invalid(format string, a ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}

// Resolve validates the requested mappings and binds each to the
// endpoint's addresses. A host IP publishes in its own family only
// ("0.0.0.0" every IPv4 host address, "::" every IPv6 one); no host IP
// publishes in every family the endpoint has an address in, IPv4 on the
// network's defaultHostIPv4 when it has one. A bad mapping is error 7
// naming it (runtimeConfig.portMappings[i] and its key).
func Resolve(req []Mapping, defaultHostIPv4 string, addrs []*net.IPNet) ([]Port, error) {
	var out []Port
	for i, m := range req {
		field := fmt.Sprintf("runtimeConfig.portMappings[%d]", i)
		proto := strings.ToLower(m.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" && proto != "sctp" {
			return nil, invalid("%s.protocol: %q is not tcp, udp or sctp", field, m.Protocol)
		}
		if m.HostPort < 1 || m.HostPort > 65535 {
			return nil, invalid("%s.hostPort: %d is outside 1..65535", field, m.HostPort)
		}
		if m.ContainerPort < 1 || m.ContainerPort > 65535 {
			return nil, invalid("%s.containerPort: %d is outside 1..65535", field, m.ContainerPort)
		}
		var hip net.IP
		if m.HostIP != "" {
			if hip = net.ParseIP(m.HostIP); hip == nil {
				return nil, invalid("%s.hostIP: %q is not an IP address", field, m.HostIP)
			}
		}
		bound := false
		for _, a := range addrs {
			host, ok := hostIPFor(hip, defaultHostIPv4, a.IP)
			if !ok {
				continue
			}
			out = append(out, Port{Protocol: proto, HostIP: host, HostPort: m.HostPort,
				ContainerIP: a.IP.String(), ContainerPort: m.ContainerPort})
			bound = true
		}
		switch {
		case !bound && hip == nil:
			return nil, invalid("%s: the endpoint has no address to publish", field)
		case !bound:
			return nil, invalid("%s.hostIP: the endpoint has no address of the family of %s", field, m.HostIP)
		}
	}
	return out, nil
}

// hostIPFor returns the host address on which a mapping with host IP hip
// (nil: none given) publishes the container address ctr, "" for every
// host address of ctr's family; ok is false when hip is of the other
// family. The network's default host IP applies to IPv4 only.
func hostIPFor(hip net.IP, defaultHostIPv4 string, ctr net.IP) (host string, ok bool) {
	v4 := ctr.To4() != nil
	if hip == nil {
		if !v4 || defaultHostIPv4 == "" {
			return "", true
		}
		// Validated as IPv4 when the network was made.
		hip = net.ParseIP(defaultHostIPv4)
	}
	if (hip.To4() != nil) != v4 {
		return "", false
	}
	if hip.IsUnspecified() {
		return "", true
	}
	return hip.String(), true
}

// family is "4" or "6" for an address.
func family(ip net.IP) string {
	if ip.To4() != nil {
		return "4"
	}
	return "6"
}
