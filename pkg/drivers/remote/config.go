package remote

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnmnet/cnmnet/pkg/confcheck"
	"github.com/cnmnet/cnmnet/pkg/drivers/remote/dockerplugin"
)

var (
	minTimeout = 10 * time.Millisecond
	maxTimeout = 5 * time.Minute
)

// netConf holds the remote driver's keys of a network configuration.
type netConf struct {
	Plugin  string            `json:"plugin,omitempty"`
	Socket  string            `json:"socket,omitempty"`
	Timeout json.RawMessage   `json:"timeout,omitempty"`
	Options map[string]string `json:"options,omitempty"`
	// AdvertiseAddress is this host's address as a global plugin's
	// node discovery gives it (see discovery.go).
	AdvertiseAddress string `json:"advertiseAddress,omitempty"`
}

// target is how a network's plugin is reached, as recorded with it.
type target struct {
	Plugin  string        `json:"plugin,omitempty"`
	Socket  string        `json:"socket,omitempty"`
	Timeout time.Duration `json:"timeout"`
}

func (t target) String() string {
	if t.Plugin != "" {
		return t.Plugin
	}
	return t.Socket
}

// KnownKeys implements driverapi.KeyDeclarer.
func (d *Driver) KnownKeys() []string {
	return []string{"plugin", "socket", "timeout", "options", "advertiseAddress"}
}

// ValidateConfig implements driverapi.ConfigValidator.
func (d *Driver) ValidateConfig(raw []byte) error {
	_, _, err := parseConf(raw)
	return err
}

func invalid(format string, a ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}

// parseConf decodes and checks the driver's keys: a bad value is error 7
// naming its key.
func parseConf(raw []byte) (*netConf, target, error) {
	if err := confcheck.ObjectError(raw); err != nil {
		return nil, target{}, types.NewError(types.ErrDecodingFailure, "decode remote configuration: "+err.Error(), "")
	}
	c := &netConf{}
	if err := confcheck.Decode("", raw, c); err != nil {
		return nil, target{}, invalid("%v", err)
	}
	t := target{Plugin: c.Plugin, Socket: c.Socket, Timeout: dockerplugin.DefaultTimeout}
	switch {
	case c.Plugin == "" && c.Socket == "":
		return nil, target{}, invalid("plugin: required: the Docker network plugin's name (or socket: the path of its socket)")
	case c.Plugin != "" && c.Socket != "":
		return nil, target{}, invalid("socket: give plugin or socket, not both")
	case c.Plugin != "":
		if err := dockerplugin.ValidName(c.Plugin); err != nil {
			return nil, target{}, invalid("plugin: %v", err)
		}
	case !filepath.IsAbs(c.Socket) || filepath.Clean(c.Socket) != c.Socket:
		return nil, target{}, invalid("socket: %q: want an absolute, clean path", c.Socket)
	}
	if !confcheck.Absent(c.Timeout) {
		var s string
		if json.Unmarshal(c.Timeout, &s) != nil {
			return nil, target{}, invalid("timeout: want a Go duration such as \"10s\", got %s", confcheck.Shorten(c.Timeout))
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < minTimeout || d > maxTimeout {
			return nil, target{}, invalid("timeout: %q is not a duration from %s to %s such as \"10s\"", s, minTimeout, maxTimeout)
		}
		t.Timeout = d
	}
	if c.AdvertiseAddress != "" && net.ParseIP(c.AdvertiseAddress) == nil {
		return nil, target{}, invalid("advertiseAddress: %q is not an IP address", c.AdvertiseAddress)
	}
	return c, t, nil
}
