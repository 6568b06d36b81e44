package ipam

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
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
	out, err := execPlugin(ctx, plugin, d.NetConf, d.env("ADD"))
	if err != nil {
		return nil, pluginErr(d.Type, "ADD", err)
	}
	res, err := create.CreateFromBytes(out)
	if err != nil {
		return nil, fmt.Errorf("ipam plugin %s: ADD: decode result: %w", d.Type, err)
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
	if _, err := execPlugin(ctx, plugin, d.NetConf, d.env(command)); err != nil {
		return pluginErr(d.Type, command, err)
	}
	return nil
}

// env sets every CNI_* variable explicitly: they come after os.Environ()
// and the later value wins, so an inherited CNI_CONTAINERID (the
// container's) cannot replace ours.
func (d Delegate) env(command string) []string {
	return cniEnv(command, d.ContainerID, d.NetNS, d.IfName, d.Args, d.Path)
}

func cniEnv(command, containerID, netns, ifName, args, path string) []string {
	return []string{
		"CNI_COMMAND=" + command,
		"CNI_CONTAINERID=" + containerID,
		"CNI_NETNS=" + netns,
		"CNI_IFNAME=" + ifName,
		"CNI_ARGS=" + args,
		"CNI_PATH=" + path,
	}
}

// execPlugin runs a CNI plugin as a runtime does — the verb and the
// attachment in the environment, the configuration on stdin — and
// returns its stdout; a failure is the plugin's *types.Error when it
// printed one. This is the protocol itself rather than the reference
// library's invoke package, which would bring net/http, crypto/tls and
// OpenTelemetry into every plugin binary and slow every start.
func execPlugin(ctx context.Context, plugin string, stdin []byte, cniVars []string) ([]byte, error) {
	var stdout bytes.Buffer
	var err error
	// A plugin binary being written (an install) is "text file busy".
	for try := 0; try <= 5; try++ {
		stdout.Reset()
		cmd := exec.CommandContext(ctx, plugin)
		cmd.Env = append(os.Environ(), cniVars...)
		cmd.Stdin = bytes.NewReader(stdin)
		cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
		if err = cmd.Run(); err == nil || !strings.Contains(err.Error(), "text file busy") {
			break
		}
		time.Sleep(time.Second)
	}
	if err == nil {
		return stdout.Bytes(), nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return nil, err
	}
	te := &types.Error{}
	if json.Unmarshal(stdout.Bytes(), te) == nil && (te.Code != 0 || te.Msg != "") {
		return nil, te
	}
	return nil, fmt.Errorf("%w: %s", err, bytes.TrimSpace(stdout.Bytes()))
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
	if _, err := execPlugin(ctx, plugin, netconf, cniEnv(command, "", "", "", "", path)); err != nil {
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
	for _, dir := range filepath.SplitList(path) {
		plugin := filepath.Join(dir, pluginType)
		if st, err := os.Stat(plugin); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return plugin, nil
		}
	}
	return "", &notFoundError{fmt.Errorf("ipam plugin %s: failed to find plugin %q in path %v", pluginType, pluginType, filepath.SplitList(path))}
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
