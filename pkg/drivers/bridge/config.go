package bridge

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// netConf holds the bridge driver's keys of a network configuration.
type netConf struct {
	Bridge          string `json:"bridge,omitempty"`
	MTU             int    `json:"mtu,omitempty"`
	IsGateway       *bool  `json:"isGateway,omitempty"`
	IPMasq          *bool  `json:"ipMasq,omitempty"`
	Isolation       *bool  `json:"isolation,omitempty"`
	EnableICC       *bool  `json:"enableICC,omitempty"`
	HairpinMode     bool   `json:"hairpinMode,omitempty"`
	PromiscMode     bool   `json:"promiscMode,omitempty"`
	HostBindingIPv4 string `json:"hostBindingIPv4,omitempty"`

	RuntimeConfig struct {
		PortMappings []portMapping `json:"portMappings,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// portMapping is one entry of the portMappings capability.
type portMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
}

func invalid(format string, a ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}

func parseConf(raw []byte) (*netConf, error) {
	c := &netConf{}
	if err := json.Unmarshal(raw, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode bridge configuration: "+err.Error(), "")
	}
	return c, nil
}

func orDefault(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

// validateNetwork checks the keys that shape a network.
func (c *netConf) validateNetwork() error {
	if c.Bridge != "" {
		if err := validLinkName(c.Bridge); err != nil {
			return invalid("bridge: %v", err)
		}
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return invalid("mtu: %d is outside 68..65535", c.MTU)
	}
	if c.HostBindingIPv4 != "" {
		ip := net.ParseIP(c.HostBindingIPv4)
		if ip == nil || ip.To4() == nil {
			return invalid("hostBindingIPv4: %q is not an IPv4 address", c.HostBindingIPv4)
		}
	}
	return nil
}

// validLinkName accepts a Linux interface name.
func validLinkName(name string) error {
	if len(name) > 15 {
		return fmt.Errorf("%q is longer than 15 characters", name)
	}
	if name == "." || name == ".." || name == "" {
		return fmt.Errorf("%q is not an interface name", name)
	}
	for _, r := range name {
		if r <= ' ' || r > '~' || r == '/' || r == ':' {
			return fmt.Errorf("%q: character %q not allowed", name, r)
		}
	}
	return nil
}

// publishedPort is a port mapping resolved for one container address.
type publishedPort struct {
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"` // "" = every host address of the family
	HostPort      int    `json:"hostPort"`
	ContainerIP   string `json:"containerIP"`
	ContainerPort int    `json:"containerPort"`
}

// resolvePorts validates the requested mappings and binds each to the
// endpoint's address of the host IP's family (both families when the
// host IP is unspecified).
func resolvePorts(req []portMapping, defaultHostIPv4 string, addrs []*net.IPNet) ([]publishedPort, error) {
	var out []publishedPort
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
		hostIP := m.HostIP
		if hostIP == "" {
			hostIP = defaultHostIPv4
		}
		var hip net.IP
		if hostIP != "" {
			if hip = net.ParseIP(hostIP); hip == nil {
				return nil, invalid("%s.hostIP: %q is not an IP address", field, m.HostIP)
			}
		}
		bound := false
		for _, a := range addrs {
			v4 := a.IP.To4() != nil
			if hip != nil && !hip.IsUnspecified() && (hip.To4() != nil) != v4 {
				continue
			}
			p := publishedPort{Protocol: proto, HostPort: m.HostPort, ContainerIP: a.IP.String(), ContainerPort: m.ContainerPort}
			if hip != nil && !hip.IsUnspecified() {
				p.HostIP = hip.String()
			}
			out = append(out, p)
			bound = true
		}
		if !bound {
			return nil, invalid("%s.hostIP: the endpoint has no address of the family of %s", field, hostIP)
		}
	}
	return out, nil
}

// family is "4" or "6" for an address.
func family(ip net.IP) string {
	if ip.To4() != nil {
		return "4"
	}
	return "6"
}
