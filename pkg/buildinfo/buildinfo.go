// Package buildinfo says which build of cnmnet a binary is: the version
// and commit that `make build` stamps in with -ldflags, or else the
// commit the Go toolchain recorded, for `--version` and `cnmctl version`.
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Set at link time (-X github.com/cnmnet/cnmnet/pkg/buildinfo.version=…);
// never written at run time.
var (
	version = "dev"
	commit  = ""
)

// Version is the release or `git describe` of the build, "dev" when it
// was not stamped.
func Version() string { return version }

// Commit is the commit the binary was built from, "unknown" when neither
// the build nor the toolchain recorded it.
func Commit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// String is the one line a binary prints for --version.
func String(name string) string {
	return fmt.Sprintf("%s %s (commit %s)", name, Version(), Commit())
}
