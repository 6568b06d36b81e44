package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/spf13/cobra"

	"github.com/cnmnet/cnmnet/pkg/cnm"
	"github.com/cnmnet/cnmnet/pkg/confcheck"
	"github.com/cnmnet/cnmnet/pkg/plugin"
)

func newValidateCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE…",
		Short: "Check network configurations as ADD would: bad values and unknown keys, named",
		Long: "Check conflists (.conflist) and plugin configurations (.conf, .json; a directory: those under it) " +
			"with the code ADD checks them with: for each plugin of cnmnet, the core's keys, the ipam section and " +
			"the driver's keys. Values are checked as ADD checks them, and keys nothing reads are listed with the " +
			"known key they most likely misspell. Plugins of other types are not checked. No store is opened. " +
			"Exit code 0 when every file is clean, 1 otherwise.",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{"validate: name at least one file"}
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			drivers := cnm.NewDrivers()
			for _, register := range suiteDrivers {
				if err := register(drivers); err != nil {
					return err
				}
			}
			var reports []fileReport
			for _, f := range configFiles(args) {
				reports = append(reports, validateFile(f, drivers))
			}
			if err := o.show(reports, func() error { return printReports(reports) }); err != nil {
				return err
			}
			bad := 0
			for _, r := range reports {
				if len(r.Problems) > 0 {
					bad++
				}
			}
			if bad > 0 {
				return problemsError{files: bad}
			}
			return nil
		},
	}
}

// problemsError reports that validate found mistakes: the listing is the
// output, and the exit code 1.
type problemsError struct{ files int }

func (e problemsError) Error() string {
	if e.files == 1 {
		return "1 file has problems"
	}
	return fmt.Sprintf("%d files have problems", e.files)
}

// fileReport is what validate found in one file.
type fileReport struct {
	File     string    `json:"file"`
	Problems []problem `json:"problems"`
	// Notes say what was not checked (plugins of other types).
	Notes []problem `json:"notes,omitempty"`
}

// problem is one finding, at a key of the file.
type problem struct {
	// Key is the path of the key in the file: "plugins[0].ipam.ranges";
	// "" for the file as a whole.
	Key     string `json:"key"`
	Problem string `json:"problem"`
	// Code is the CNI error an ADD answers with; 0 when ADD goes on
	// (an unknown key, which CNI allows).
	Code uint `json:"code,omitempty"`
	// Suggestion is the known key an unknown one most likely misspells.
	Suggestion string `json:"suggestion,omitempty"`
}

// add records a problem once: a list's own key (its name, say) can be
// found bad in each of its plugins.
func (r *fileReport) add(key, msg string, code uint) {
	p := problem{Key: key, Problem: msg, Code: code}
	if !slices.Contains(r.Problems, p) {
		r.Problems = append(r.Problems, p)
	}
}

func (r *fileReport) unknown(prefix string, us []confcheck.Unknown) {
	for _, u := range us {
		r.Problems = append(r.Problems, problem{Key: prefix + u.Key, Problem: u.Problem(), Suggestion: u.Suggestion})
	}
}

// configFiles expands directories into the configuration files under
// them, as runtimes pick them: .conflist, .conf, .json.
func configFiles(args []string) []string {
	var files []string
	for _, a := range args {
		if fi, err := os.Stat(a); err != nil || !fi.IsDir() {
			files = append(files, a) // read, or said unreadable, as given
			continue
		}
		_ = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				files = append(files, p) // validateFile says why
				return nil
			}
			switch filepath.Ext(p) {
			case ".conflist", ".conf", ".json":
				if !d.IsDir() {
					files = append(files, p)
				}
			}
			return nil
		})
	}
	return files
}

// The keys of a conflist itself, as libcni reads them: through a map,
// so in their case only.
var listKeys = confcheck.Keys{Names: []string{"cniVersion", "cniVersions", "name", "plugins", "disableCheck", "disableGC",
	"loadOnlyInlinedPlugins"}, Exact: true}

func validateFile(path string, drivers *cnm.Drivers) fileReport {
	r := fileReport{File: path, Problems: []problem{}}
	raw, err := os.ReadFile(path)
	if err != nil {
		r.add("", fmt.Sprintf("cannot read: %v", unwrapPath(err)), 0)
		return r
	}
	if err := confcheck.ObjectError(raw); err != nil {
		r.add("", err.Error(), types.ErrDecodingFailure)
		return r
	}
	top, _ := confcheck.Object(raw)
	if _, isList := top["plugins"]; isList || filepath.Ext(path) == ".conflist" {
		validateList(&r, top, drivers)
	} else {
		validatePlugin(&r, "", raw, drivers)
	}
	return r
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// validateList checks a conflist's own keys, then each plugin as libcni
// hands it over: with the list's name and cniVersion.
func validateList(r *fileReport, top map[string]json.RawMessage, drivers *cnm.Drivers) {
	r.unknown("", listKeys.Unknown("", top))
	var name string
	if err := confcheck.Decode("name", top["name"], &name); err != nil {
		r.add("name", trimKey("name", err.Error()), types.ErrInvalidNetworkConfig)
		return
	}
	ver, ok := listVersion(r, top)
	if !ok {
		return
	}
	for _, k := range []string{"disableCheck", "disableGC", "loadOnlyInlinedPlugins"} {
		if err := checkListBool(k, top[k]); err != nil {
			r.add(k, err.Error(), types.ErrInvalidNetworkConfig)
		}
	}
	var plugins []json.RawMessage
	if confcheck.Absent(top["plugins"]) || json.Unmarshal(top["plugins"], &plugins) != nil || len(plugins) == 0 {
		r.add("plugins", `want a list of plugin configurations such as [{"type": "cnm-bridge"}]`, types.ErrInvalidNetworkConfig)
		return
	}
	for i, p := range plugins {
		prefix := fmt.Sprintf("plugins[%d]", i)
		obj, ok := confcheck.Object(p)
		if !ok {
			r.add(prefix, "want a plugin configuration, an object such as {\"type\": \"cnm-bridge\"}, got "+confcheck.Shorten(p),
				types.ErrInvalidNetworkConfig)
			continue
		}
		// libcni gives every plugin the list's name and version.
		obj["name"], _ = json.Marshal(name)
		obj["cniVersion"], _ = json.Marshal(ver)
		conf, _ := json.Marshal(obj)
		validatePlugin(r, prefix+".", conf, drivers)
	}
}

// listVersion is the cniVersion libcni gives the plugins: the list's, or
// the highest of its cniVersions this CNI library knows.
func listVersion(r *fileReport, top map[string]json.RawMessage) (string, bool) {
	var ver string
	var vers []string
	if err := confcheck.Decode("cniVersion", top["cniVersion"], &ver); err != nil {
		r.add("cniVersion", trimKey("cniVersion", err.Error()), types.ErrInvalidNetworkConfig)
		return "", false
	}
	if err := confcheck.Decode("cniVersions", top["cniVersions"], &vers); err != nil {
		r.add("cniVersions", trimKey("cniVersions", err.Error()), types.ErrInvalidNetworkConfig)
		return "", false
	}
	if len(vers) == 0 {
		return ver, true
	}
	best := ""
	for i, v := range append(vers, ver) {
		if v == "" {
			continue
		}
		newer, err := version.GreaterThan(v, version.Current())
		if err != nil {
			key := fmt.Sprintf("cniVersions[%d]", i)
			if i == len(vers) {
				key = "cniVersion"
			}
			r.add(key, fmt.Sprintf("%q is not a version", v), types.ErrInvalidNetworkConfig)
			return "", false
		}
		if newer {
			continue // libcni skips versions it does not know yet
		}
		if later, _ := version.GreaterThan(v, best); best == "" || later {
			best = v
		}
	}
	if best == "" {
		best = ver
	}
	return best, true
}

// checkListBool checks a flag of the list as libcni reads it: true,
// false, or those in a string.
func checkListBool(key string, raw json.RawMessage) error {
	if confcheck.Absent(raw) {
		return nil
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && (strings.EqualFold(s, "true") || strings.EqualFold(s, "false")) {
		return nil
	}
	return fmt.Errorf("want true or false, got %s", confcheck.Shorten(raw))
}

// validatePlugin checks one plugin configuration with the code ADD
// uses; prefix is its path in the file ("plugins[0].").
func validatePlugin(r *fileReport, prefix string, raw []byte, drivers *cnm.Drivers) {
	var head struct {
		Type       json.RawMessage `json:"type"`
		CNIVersion json.RawMessage `json:"cniVersion"`
	}
	_ = json.Unmarshal(raw, &head)
	var typ string
	if err := confcheck.Decode("type", head.Type, &typ); err != nil {
		r.add(prefix+"type", trimKey("type", err.Error()), types.ErrInvalidNetworkConfig)
		return
	}
	at := strings.TrimSuffix(prefix, ".")
	if typ == "" {
		r.add(prefix+"type", "missing: the plugin to run", types.ErrInvalidNetworkConfig)
		return
	}
	if drivers.Driver(typ) == nil {
		if s := confcheck.Suggest(typ, drivers.Types()); s != "" {
			r.add(prefix+"type", fmt.Sprintf("%q is not a plugin of cnmnet (did you mean %q?)", typ, s), 0)
		} else {
			r.Notes = append(r.Notes, problem{Key: at, Problem: fmt.Sprintf("type %q is not a plugin of cnmnet: not checked", typ)})
		}
		return
	}
	if msg, ok := checkVersion(head.CNIVersion); !ok {
		r.add("cniVersion", msg, types.ErrIncompatibleCNIVersion) // a list's is the list's
	}
	unknown, err := cnm.CheckConfig(raw, drivers)
	// ADD stops at the first bad value; to name them all, check again
	// without the top-level key of each one found, until none is left.
	seen := map[string]bool{}
	for err != nil {
		te := cnm.AsCNIError(err)
		key, msg := splitKey(te.Msg)
		top := topKey(key)
		if seen[top] {
			break // what taking the key out did, not a mistake of the file
		}
		switch {
		case key == "":
			r.add(at, msg, te.Code)
		case prefix != "" && (key == "name" || key == "cniVersion"):
			r.add(key, msg, te.Code) // the list's, given to the plugin
		default:
			r.add(prefix+key, msg, te.Code)
		}
		if top == "" {
			break
		}
		seen[top] = true
		if raw, err = withoutKey(raw, top); err != nil {
			break
		}
		_, err = cnm.CheckConfig(raw, drivers)
	}
	r.unknown(prefix, unknown)
}

// placeholders stand in for a bad value of a key a configuration cannot
// do without, so that the keys after it are checked too.
var placeholders = map[string]json.RawMessage{"name": json.RawMessage(`"validate"`)}

// topKey is the top-level key of a path: "ipam" of "ipam.ranges[0]".
func topKey(path string) string {
	if i := strings.IndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return path
}

// withoutKey is the configuration raw without key (matched as
// encoding/json matches keys), or with its placeholder.
func withoutKey(raw []byte, key string) ([]byte, error) {
	obj, ok := confcheck.Object(raw)
	if !ok {
		return nil, errors.New("not an object")
	}
	for k := range obj {
		if strings.EqualFold(k, key) {
			delete(obj, k)
		}
	}
	if p, ok := placeholders[key]; ok {
		obj[key] = p
	}
	return json.Marshal(obj)
}

// checkVersion says whether the plugins speak the configuration's
// cniVersion, as the CNI library checks it before ADD.
func checkVersion(raw json.RawMessage) (string, bool) {
	var v string
	if json.Unmarshal(raw, &v) != nil {
		return "", true // LoadNetConf names it
	}
	supported := plugin.SupportedVersions.SupportedVersions()
	if slices.Contains(supported, v) {
		return "", true
	}
	if v == "" {
		return fmt.Sprintf("missing; cnmnet speaks %s", strings.Join(supported, ", ")), false
	}
	return fmt.Sprintf("%q is not a version cnmnet speaks (%s)", v, strings.Join(supported, ", ")), false
}

// keyPrefix is the key a message of the plugins starts with: they name
// the key first ("ipam.ranges[0][0].subnet: …").
var keyPrefix = regexp.MustCompile(`^([A-Za-z0-9_.\-/]+(\[[0-9]+\])*)+: `)

// splitKey splits "key: problem"; key is "" when msg names none.
func splitKey(msg string) (key, rest string) {
	m := keyPrefix.FindStringSubmatch(msg)
	if m == nil {
		return "", msg
	}
	return strings.TrimSuffix(m[0], ": "), msg[len(m[0]):]
}

func trimKey(key, msg string) string { return strings.TrimPrefix(msg, key+": ") }

func printReports(reports []fileReport) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tKEY\tPROBLEM")
	for _, r := range reports {
		for _, p := range r.Problems {
			msg := p.Problem
			if p.Code != 0 {
				msg += fmt.Sprintf(" (ADD fails: %d)", p.Code)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.File, dash(p.Key), msg)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(tw, "%s\t%s\tnote: %s\n", r.File, dash(n.Key), n.Problem)
		}
		if len(r.Problems) == 0 {
			fmt.Fprintf(tw, "%s\t-\tok\n", r.File)
		}
	}
	return tw.Flush()
}
