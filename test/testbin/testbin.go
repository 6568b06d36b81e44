// Package testbin provides the reference CNI plugins the tests run next
// to cnmnet's own: an installed copy, or one built from the plugins
// module that go.mod already requires.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// installedDirs are where Debian's containernetworking-plugins and a
// node's CNI installation keep the reference plugins.
var installedDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// Reference puts the reference plugin name (e.g. "portmap") in dir,
// linking an installed copy or else building it, and returns its path.
func Reference(name, dir string) (string, error) {
	dst := filepath.Join(dir, name)
	for _, d := range installedDirs {
		src := filepath.Join(d, name)
		if _, err := os.Stat(src); err == nil {
			if err := os.Symlink(src, dst); err != nil && !os.IsExist(err) {
				return "", fmt.Errorf("link %s: %w", src, err)
			}
			return dst, nil
		}
	}
	return Build(name, dir)
}

// Build builds the reference plugin name from the plugins module go.mod
// requires, into dir: for what the distribution's older copy lacks (GC
// and STATUS came with CNI 1.1).
func Build(name, dir string) (string, error) {
	dst := filepath.Join(dir, name)
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/containernetworking/plugins").Output()
	if err != nil {
		return "", fmt.Errorf("locate the plugins module: %w", err)
	}
	modDir := strings.TrimSpace(string(out))
	pkg, err := findPlugin(modDir, name)
	if err != nil {
		return "", err
	}
	// Built inside its own module, whose go.sum covers its dependencies.
	build := exec.Command("go", "build", "-o", dst, "./"+pkg)
	build.Dir = modDir
	build.Env = append(os.Environ(), "GOFLAGS=-mod=readonly -buildvcs=false", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v: %s", name, err, out)
	}
	return dst, nil
}

func findPlugin(modDir, name string) (string, error) {
	for _, kind := range []string{"main", "ipam", "meta"} {
		rel := filepath.Join("plugins", kind, name)
		if _, err := os.Stat(filepath.Join(modDir, rel)); err == nil {
			return rel, nil
		}
	}
	return "", fmt.Errorf("no reference plugin %q in %s", name, modDir)
}
