package dockerplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Dirs are where plugins are looked for by name.
type Dirs struct {
	// Sockets hold <name>.sock or <name>/<name>.sock.
	Sockets []string
	// Specs hold <name>.spec (a URL) or <name>.json (an address and TLS).
	Specs []string
}

// DefaultDirs are the Docker daemon's.
var DefaultDirs = Dirs{
	Sockets: []string{"/run/docker/plugins"},
	Specs:   []string{"/etc/docker/plugins", "/usr/lib/docker/plugins"},
}

// ErrNotFound is matched by the error of a plugin no directory has.
var ErrNotFound = errors.New("plugin not found")

// Addr is where a plugin listens.
type Addr struct {
	// Network is "unix" or "tcp".
	Network string
	// Address is a socket path or a host:port.
	Address string
	// TLS is the client's TLS settings for a tcp address; nil for none.
	TLS *TLSFiles
	// Source is the file the address came from, for messages.
	Source string
}

// TLSFiles are the TLS settings of a <name>.json spec, as Docker reads them.
type TLSFiles struct {
	InsecureSkipVerify bool
	CAFile             string
	CertFile           string
	KeyFile            string
}

func (a Addr) String() string {
	if a.Network == "unix" {
		return "unix://" + a.Address
	}
	return a.Network + "://" + a.Address
}

// SocketAddr is the address of a plugin's unix socket at path.
func SocketAddr(path string) Addr {
	return Addr{Network: "unix", Address: path, Source: path}
}

// ValidName reports whether name can name a plugin: a file name, with no
// path in it.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty plugin name")
	case len(name) > 128:
		return fmt.Errorf("plugin name %.16q… is longer than 128 characters", name)
	case name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("plugin name %q is not a file name", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("plugin name %q has a control character", name)
		}
	}
	return nil
}

// Find looks the plugin name up as the Docker daemon does: its socket
// first, then its spec files, in the order of the directories.
func (d Dirs) Find(name string) (Addr, error) {
	if err := ValidName(name); err != nil {
		return Addr{}, err
	}
	for _, dir := range d.Sockets {
		for _, p := range []string{filepath.Join(dir, name+".sock"), filepath.Join(dir, name, name+".sock")} {
			if st, err := os.Stat(p); err == nil && st.Mode()&os.ModeSocket != 0 {
				return SocketAddr(p), nil
			}
		}
	}
	for _, dir := range d.Specs {
		for _, base := range []string{filepath.Join(dir, name), filepath.Join(dir, name, name)} {
			for _, ext := range []string{".spec", ".json"} {
				p := base + ext
				raw, err := os.ReadFile(p)
				if errors.Is(err, os.ErrNotExist) {
					continue
				}
				if err != nil {
					return Addr{}, fmt.Errorf("plugin %s: %w", name, err)
				}
				a, err := parseSpec(ext, raw)
				if err != nil {
					return Addr{}, fmt.Errorf("plugin %s: spec file %s: %w", name, p, err)
				}
				a.Source = p
				return a, nil
			}
		}
	}
	return Addr{}, fmt.Errorf("%w: %s: no socket %s.sock in %s, no spec file %s.spec or %s.json in %s",
		ErrNotFound, name, name, strings.Join(d.Sockets, ", "), name, name, strings.Join(d.Specs, ", "))
}

// parseSpec reads a spec file: a URL on its own (.spec), or a JSON
// object with Addr and TLSConfig (.json).
func parseSpec(ext string, raw []byte) (Addr, error) {
	if ext == ".spec" {
		return ParseURL(strings.TrimSpace(string(raw)))
	}
	var spec struct {
		Name      string
		Addr      string
		TLSConfig *TLSFiles
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		return Addr{}, fmt.Errorf("not a JSON spec: %w", err)
	}
	a, err := ParseURL(spec.Addr)
	if err != nil {
		return Addr{}, fmt.Errorf("Addr: %w", err)
	}
	if spec.TLSConfig != nil && a.Network == "tcp" {
		a.TLS = spec.TLSConfig
	}
	return a, nil
}

// ParseURL reads a plugin address: unix:///path, tcp://host:port (also
// http:// and https://, the latter with TLS).
func ParseURL(s string) (Addr, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Addr{}, fmt.Errorf("%q is not a URL: %w", s, err)
	}
	switch u.Scheme {
	case "unix":
		p := u.Path
		if p == "" {
			p = u.Opaque
		}
		if !filepath.IsAbs(p) {
			return Addr{}, fmt.Errorf("%q: want unix:///absolute/path", s)
		}
		return Addr{Network: "unix", Address: p}, nil
	case "tcp", "http", "https":
		if u.Host == "" || u.Port() == "" {
			return Addr{}, fmt.Errorf("%q: want %s://host:port", s, u.Scheme)
		}
		a := Addr{Network: "tcp", Address: u.Host}
		if u.Scheme == "https" {
			a.TLS = &TLSFiles{}
		}
		return a, nil
	default:
		return Addr{}, fmt.Errorf("%q: want unix:///path or tcp://host:port", s)
	}
}
