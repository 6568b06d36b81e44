package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/driverapi"
	"github.com/cnmnet/cnmnet/pkg/drivers/remote/dockerplugin"
)

// A network's scope is its plugin's (GetCapabilities' Scope), and the
// store is chosen by it before any is opened (plugin.ScopeChooser): a
// plugin invocation cannot ask a store where the network lives before
// knowing which store to open. So each host keeps, in its data
// directory, the capabilities each plugin last answered (capsDir), one
// file per plugin, written atomically: no lock is shared by concurrent
// invocations. A cached answer is used without asking while the plugin's
// socket is the one that gave it (same inode and modification time: a
// restarted plugin makes its socket anew, and is asked again); a stale
// one is used only when the plugin does not answer, so that a DEL finds
// a network of a plugin that is gone.

// capsDir is where a host keeps its plugins' capabilities, under its
// data directory.
const capsDir = NetworkType + "/capabilities"

// cachedCaps is a plugin's answer to GetCapabilities, as a host keeps it.
type cachedCaps struct {
	Target       string            `json:"target"`
	Capabilities capabilitiesReply `json:"capabilities"`
	// Socket identifies the socket that answered; nil for a plugin on
	// TCP, which is asked at each invocation.
	Socket *socketID `json:"socket,omitempty"`
	At     time.Time `json:"at"`
}

// socketID identifies one instance of a socket file.
type socketID struct {
	Path    string `json:"path"`
	Inode   uint64 `json:"inode"`
	ModTime int64  `json:"modTime"`
}

// capsFile is the file of t's cached capabilities under dataDir.
func capsFile(dataDir string, t target) string {
	return filepath.Join(dataDir, capsDir, targetKey(t)+".json")
}

// targetKey names plugin t in file names and store keys.
func targetKey(t target) string {
	kind := "socket:"
	if t.Plugin != "" {
		kind = "plugin:"
	}
	sum := sha256.Sum256([]byte(kind + t.String()))
	return hex.EncodeToString(sum[:16])
}

// NetworkScope implements plugin.ScopeChooser: the scope of the
// network's plugin, asked or cached. A configuration the driver refuses
// is left to ValidateConfig (""); a plugin that cannot tell (it does not
// answer, or its answer is not the protocol's) gives its cached scope,
// else "": the network is looked for in the host's store, where ADD then
// fails on the plugin and DEL finds nothing of a network no plugin here
// ever served.
func (d *Driver) NetworkScope(conf *cnm.NetConf) (string, error) {
	_, t, err := parseConf(conf.Raw)
	if err != nil {
		return "", nil
	}
	caps, err := d.capabilities(context.Background(), t, conf.DataDir)
	if err != nil {
		cached, cerr := readCaps(conf.DataDir, t)
		if cerr != nil {
			return "", nil
		}
		caps = cached.Capabilities
	}
	scope := caps.Scope
	switch scope {
	case driverapi.GlobalScope:
		if conf.Cluster == nil {
			return "", invalid("cluster: plugin %s is of global scope: its networks span hosts, and the configuration needs a cluster section naming the cluster store (cluster.etcd.endpoints)", t)
		}
	case driverapi.LocalScope:
	default:
		return "", nil // CreateNetwork refuses it
	}
	return scope, nil
}

// capabilities are t's plugin's: the cached answer while its socket is
// the one that gave it, else asked (Activate, GetCapabilities) and kept.
func (d *Driver) capabilities(ctx context.Context, t target, dataDir string) (capabilitiesReply, error) {
	c, err := d.client(t)
	if err != nil {
		return capabilitiesReply{}, err
	}
	id := socketOf(c.Addr())
	if cached, err := readCaps(dataDir, t); err == nil && id != nil && sameSocket(cached.Socket, id) {
		return cached.Capabilities, nil
	}
	if err := c.Activate(ctx, dockerplugin.NetworkDriver); err != nil {
		return capabilitiesReply{}, err
	}
	var caps capabilitiesReply
	if err := c.Call(ctx, "NetworkDriver.GetCapabilities", struct{}{}, &caps); err != nil {
		return capabilitiesReply{}, err
	}
	if caps.Scope != driverapi.LocalScope && caps.Scope != driverapi.GlobalScope {
		return capabilitiesReply{}, fmt.Errorf("%w: GetCapabilities: Scope %q is neither local nor global", dockerplugin.ErrMalformed, caps.Scope)
	}
	switch caps.ConnectivityScope {
	case "":
		caps.ConnectivityScope = caps.Scope // as the Docker daemon reads it
	case driverapi.LocalScope, driverapi.GlobalScope:
	default:
		return capabilitiesReply{}, fmt.Errorf("%w: GetCapabilities: ConnectivityScope %q is neither local nor global", dockerplugin.ErrMalformed, caps.ConnectivityScope)
	}
	if err := writeCaps(dataDir, t, &cachedCaps{Target: t.String(), Capabilities: caps, Socket: id, At: time.Now().UTC()}); err != nil {
		// Only the next invocation's ask is lost, or a DEL's fallback.
		fmt.Fprintf(d.log, "%s: plugin %s: keep capabilities: %v\n", NetworkType, t, err)
	}
	return caps, nil
}

// socketOf identifies the socket of a plugin at addr as it is now; nil
// for TCP or a socket that is not there.
func socketOf(addr dockerplugin.Addr) *socketID {
	if addr.Network != "unix" {
		return nil
	}
	st, err := os.Stat(addr.Address)
	if err != nil {
		return nil
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return &socketID{Path: addr.Address, Inode: sys.Ino, ModTime: st.ModTime().UnixNano()}
}

func sameSocket(a, b *socketID) bool {
	return a != nil && b != nil && *a == *b
}

func readCaps(dataDir string, t target) (*cachedCaps, error) {
	raw, err := os.ReadFile(capsFile(dataDir, t))
	if err != nil {
		return nil, err
	}
	var c cachedCaps
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", capsFile(dataDir, t), err)
	}
	if c.Target != t.String() {
		return nil, fmt.Errorf("%s: holds plugin %s's capabilities", capsFile(dataDir, t), c.Target)
	}
	return &c, nil
}

// writeCaps replaces t's cached capabilities: written aside and renamed,
// so that a concurrent reader sees the old file or the new one.
func writeCaps(dataDir string, t target, c *cachedCaps) error {
	path := capsFile(dataDir, t)
	if old, err := readCaps(dataDir, t); err == nil && sameSocket(old.Socket, c.Socket) && old.Capabilities == c.Capabilities {
		return nil
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".caps-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(raw)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return nil
}

// dataDirOf is the data directory a network configuration names: the
// host's, where its plugins' capabilities are kept.
func dataDirOf(raw []byte) string {
	var c struct {
		DataDir string `json:"dataDir"`
	}
	if json.Unmarshal(raw, &c) != nil || c.DataDir == "" {
		return cnm.DefaultDataDir
	}
	return c.DataDir
}
