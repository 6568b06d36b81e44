package ipam

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Delegate runs an IPAM plugin for one endpoint. ContainerID is the
// identity the plugin keys its reservation to; cnmnet passes the
// endpoint's, not the container's, so that the reservation survives the
// container.
type Delegate struct {
	Type        string // plugin binary name, e.g. "host-local"
	NetConf     []byte // the whole network config, as the plugin's stdin
	Path        string // CNI_PATH: colon-separated plugin directories
	ContainerID string // passed as CNI_CONTAINERID
	IfName      string // passed as CNI_IFNAME
	NetNS       string // passed as CNI_NETNS
	Args        string // passed as CNI_ARGS
}

// Add runs ADD and returns the result in the current CNI version.
func (d Delegate) Add(ctx context.Context) (*current.Result, error) {
	plugin, err := findPlugin(d.Type, d.Path)
	if err != nil {
		return nil, err
	}
	res, err := invoke.ExecPluginWithResult(ctx, plugin, d.NetConf, d.args("ADD"), nil)
	if err != nil {
		return nil, pluginErr(d.Type, "ADD", err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("ipam plugin %s: ADD: convert result: %w", d.Type, err)
	}
	return cur, nil
}

// Del runs DEL, releasing what the plugin holds for ContainerID.
func (d Delegate) Del(ctx context.Context) error {
	return d.run(ctx, "DEL")
}

// Check runs CHECK; NetConf must carry the prevResult.
func (d Delegate) Check(ctx context.Context) error {
	return d.run(ctx, "CHECK")
}

func (d Delegate) run(ctx context.Context, command string) error {
	plugin, err := findPlugin(d.Type, d.Path)
	if err != nil {
		return err
	}
	if err := invoke.ExecPluginWithoutResult(ctx, plugin, d.NetConf, d.args(command), nil); err != nil {
		return pluginErr(d.Type, command, err)
	}
	return nil
}

// args sets every CNI_* variable explicitly: invoke.Args appends them after
// os.Environ() and the later value wins, so an inherited CNI_CONTAINERID
// (the container's) cannot replace ours.
func (d Delegate) args(command string) *invoke.Args {
	return &invoke.Args{
		Command:       command,
		ContainerID:   d.ContainerID,
		NetNS:         d.NetNS,
		IfName:        d.IfName,
		PluginArgsStr: d.Args,
		Path:          d.Path,
	}
}

// DelegateGC runs GC; netconf already lists cni.dev/valid-attachments.
func DelegateGC(ctx context.Context, pluginType string, netconf []byte, path string) error {
	return runNetworkCommand(ctx, "GC", pluginType, netconf, path)
}

// DelegateStatus runs STATUS; an error means the plugin cannot serve ADD.
func DelegateStatus(ctx context.Context, pluginType string, netconf []byte, path string) error {
	return runNetworkCommand(ctx, "STATUS", pluginType, netconf, path)
}

// runNetworkCommand runs a command that concerns no attachment; the
// attachment variables are set empty so inherited ones do not leak in.
func runNetworkCommand(ctx context.Context, command, pluginType string, netconf []byte, path string) error {
	plugin, err := findPlugin(pluginType, path)
	if err != nil {
		return err
	}
	args := &invoke.Args{Command: command, Path: path}
	if err := invoke.ExecPluginWithoutResult(ctx, plugin, netconf, args, nil); err != nil {
		return pluginErr(pluginType, command, err)
	}
	return nil
}

// findPlugin looks pluginType up in the CNI_PATH list path.
func findPlugin(pluginType, path string) (string, error) {
	if pluginType == "" || strings.ContainsRune(pluginType, filepath.Separator) {
		return "", fmt.Errorf("ipam plugin %q: invalid plugin type", pluginType)
	}
	if path == "" {
		return "", &notFoundError{fmt.Errorf("ipam plugin %s: empty CNI_PATH", pluginType)}
	}
	plugin, err := invoke.FindInPath(pluginType, filepath.SplitList(path))
	if err != nil {
		return "", &notFoundError{fmt.Errorf("ipam plugin %s: %w", pluginType, err)}
	}
	return plugin, nil
}

// ErrPluginNotFound is matched (errors.Is) by the error of a delegated
// call whose plugin is not in CNI_PATH: it never ran.
var ErrPluginNotFound = errors.New("ipam plugin not found")

type notFoundError struct{ err error }

func (e *notFoundError) Error() string        { return e.err.Error() }
func (e *notFoundError) Unwrap() error        { return e.err }
func (e *notFoundError) Is(target error) bool { return target == ErrPluginNotFound }

// pluginErr keeps the plugin's *types.Error reachable through errors.As.
func pluginErr(pluginType, command string, err error) error {
	return fmt.Errorf("ipam plugin %s: %s: %w", pluginType, command, err)
}
