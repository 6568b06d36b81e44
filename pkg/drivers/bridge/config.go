package bridge

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/confcheck"
	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/internal/hostports"
)

var _ driverapi.KeyDeclarer = (*Driver)(nil)

// netConf holds the bridge driver's keys of a network configuration.
type netConf struct {
	Bridge          *string `json:"bridge,omitempty"` // nil: the default name
	MTU             int     `json:"mtu,omitempty"`
	IsGateway       *bool   `json:"isGateway,omitempty"`
	IPMasq          *bool   `json:"ipMasq,omitempty"`
	Isolation       *bool   `json:"isolation,omitempty"`
	EnableICC       *bool   `json:"enableICC,omitempty"`
	HairpinMode     bool    `json:"hairpinMode,omitempty"`
	PromiscMode     bool    `json:"promiscMode,omitempty"`
	HostBindingIPv4 string  `json:"hostBindingIPv4,omitempty"`

	RuntimeConfig struct {
		PortMappings []hostports.Mapping `json:"portMappings,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

func invalid(format string, a ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}

// parseConf decodes the driver's keys: a configuration that is not a
// JSON object is a decoding failure (6), a value of the wrong form a bad
// value (7) naming its key and the form it takes.
func parseConf(raw []byte) (*netConf, error) {
	if err := confcheck.ObjectError(raw); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode bridge configuration: "+err.Error(), "")
	}
	c := &netConf{}
	if err := confcheck.Decode("", raw, c); err != nil {
		return nil, invalid("%v", err)
	}
	return c, nil
}

// KnownKeys implements driverapi.KeyDeclarer: the keys netConf reads.
func (d *Driver) KnownKeys() []string { return confcheck.Tags(netConf{}) }

func orDefault(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

// parseConfValid parses the driver's keys and validates those that
// shape a network.
func parseConfValid(raw []byte) (*netConf, error) {
	c, err := parseConf(raw)
	if err != nil {
		return nil, err
	}
	if err := c.validateNetwork(); err != nil {
		return nil, err
	}
	return c, nil
}

// validateNetwork checks the keys that shape a network.
func (c *netConf) validateNetwork() error {
	if c.Bridge != nil {
		if err := validLinkName(*c.Bridge); err != nil {
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

// validLinkName accepts the names cnmnet gives links on the host: 1 to
// 15 bytes (IFNAMSIZ less the NUL) of ASCII letters, digits, '-', '_'
// and '.', not starting with '-' or '.'. It is an allow-list because a
// name reaches the kernel, sysctl paths and iptables-restore, which would
// read quotes, '#', whitespace, a leading '-' or '!' or a trailing '+'
// as syntax rather than as part of the name.
func validLinkName(name string) error {
	const allowed = "letters, digits, '-', '_' and '.', not starting with '-' or '.'"
	switch {
	case name == "":
		return fmt.Errorf("an empty name is not an interface name; leave the key out for the default")
	case len(name) > 15:
		return fmt.Errorf("%q is longer than 15 bytes", name)
	case name[0] == '-' || name[0] == '.':
		return fmt.Errorf("%q starts with %q; allowed: %s", name, name[0], allowed)
	}
	for _, r := range name {
		if !isLinkNameRune(r) {
			return fmt.Errorf("%q: %q is not allowed; allowed: %s", name, r, allowed)
		}
	}
	return nil
}

func isLinkNameRune(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.'
}
