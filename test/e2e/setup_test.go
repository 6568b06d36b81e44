package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// command runs name with args (no shell), with a deadline, and returns its
// stdout; the error carries stderr.
func command(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

// mustRun is command for set-up steps that cannot fail.
func mustRun(timeout time.Duration, env []string, name string, args ...string) string {
	GinkgoHelper()
	out, err := command(timeout, env, name, args...)
	Expect(err).NotTo(HaveOccurred())
	return out
}

// The packages the suite needs, by a file each provides.
var packages = []struct{ path, pkg string }{
	{"/usr/bin/containerd", "containerd"},
	{"/usr/bin/containerd-shim-runc-v2", "containerd"},
	{"/usr/bin/ctr", "containerd"},
	{"/usr/sbin/runc", "runc"},
	{"/usr/sbin/iptables-restore", "iptables"},
	{"/usr/sbin/ip", "iproute2"},
	{"/usr/bin/ping", "iputils-ping"},
	{"/usr/bin/nsenter", "util-linux"},
	{"/usr/bin/unshare", "util-linux"},
	{refLoopback, "containernetworking-plugins"},
}

// What the podman scenarios need besides the above (see
// /work/shared/tools/podman-e2e.md): Debian's podman 4.3 has the CNI
// network backend. runc is named so that apt does not satisfy podman's
// "crun | runc" with crun, which refuses this host's hybrid cgroups. If
// they cannot be installed, the podman scenarios are skipped.
var podmanPackages = []struct{ path, pkg string }{
	{"/usr/bin/podman", "podman"},
	{"/usr/bin/conmon", "conmon"},
	{"/usr/sbin/runc", "runc"},
	{"/usr/bin/catatonit", "catatonit"},
}

// installPackages installs what the containerd scenarios need, which
// must succeed, then what the podman ones need, which may fail: that
// sets podmanUnavailable.
func installPackages() {
	updated := false
	Expect(aptInstall(packages, &updated)).To(Succeed())
	if err := aptInstall(podmanPackages, &updated); err != nil {
		podmanUnavailable = fmt.Sprintf("podman could not be installed: %v", err)
		fmt.Fprintf(GinkgoWriter, "%s\n", podmanUnavailable)
	}
}

// aptInstall installs with apt-get whatever of list is missing, with a
// policy-rc.d that keeps any service from being started; *updated says
// whether apt-get update ran already.
func aptInstall(list []struct{ path, pkg string }, updated *bool) error {
	var missing []string
	seen := map[string]bool{}
	for _, p := range list {
		if _, err := os.Stat(p.path); err != nil && !seen[p.pkg] {
			seen[p.pkg] = true
			missing = append(missing, p.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	fmt.Fprintf(GinkgoWriter, "apt-get install %s\n", strings.Join(missing, " "))
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); os.IsNotExist(err) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\n# cnmnet e2e: start no service while installing\nexit 101\n"), 0o755); err != nil {
			return err
		}
		defer os.Remove(policy)
	}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	if !*updated {
		if _, err := command(5*time.Minute, env, "apt-get", "update", "-qq"); err != nil {
			return err
		}
		*updated = true
	}
	if _, err := command(10*time.Minute, env, "apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)...); err != nil {
		return err
	}
	for _, p := range list {
		if _, err := os.Stat(p.path); err != nil {
			return fmt.Errorf("after installing %s: %w", p.pkg, err)
		}
	}
	return nil
}

// ensureCrictl builds crictl into the cache once.
func ensureCrictl() string {
	bin := filepath.Join(cacheDir, "bin", "crictl-"+crictlVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	Expect(os.MkdirAll(filepath.Dir(bin), 0o755)).To(Succeed())
	tmp, err := os.MkdirTemp(cacheDir, "build-")
	Expect(err).NotTo(HaveOccurred())
	defer os.RemoveAll(tmp)
	fmt.Fprintf(GinkgoWriter, "go install sigs.k8s.io/cri-tools/cmd/crictl@%s (cold: about a minute)\n", crictlVersion)
	cmd := exec.Command("go", "install",
		"-ldflags", "-X sigs.k8s.io/cri-tools/pkg/version.Version="+crictlVersion,
		"sigs.k8s.io/cri-tools/cmd/crictl@"+crictlVersion)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-mod=mod", "GOWORK=off", "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Run()).To(Succeed(), "building crictl")
	Expect(os.Rename(filepath.Join(tmp, "crictl"), bin)).To(Succeed())
	return bin
}

// buildHelpersAndPlugins builds launch and cnitrace, and copies the
// plugins under test (CNM_BIN_DIR, as make sets it, or built here) so that
// a concurrent `make build` cannot swap them mid-run.
func buildHelpersAndPlugins() {
	Expect(os.MkdirAll(toolsDir, 0o755)).To(Succeed())
	Expect(os.MkdirAll(pluginsDir, 0o755)).To(Succeed())
	goBuild(toolsDir, "./test/e2e/launch", "./test/e2e/cnitrace", "./test/e2e/pause")
	src := os.Getenv("CNM_BIN_DIR")
	if src == "" {
		goBuild(pluginsDir, "./cmd/cnm-bridge", "./cmd/cnm-null")
		return
	}
	for _, p := range []string{"cnm-bridge", "cnm-null"} {
		Expect(copyFile(filepath.Join(src, p), filepath.Join(pluginsDir, p), 0o755)).To(Succeed())
	}
}

func goBuild(outDir string, pkgs ...string) {
	GinkgoHelper()
	cmd := exec.Command("go", append([]string{"build", "-o", outDir + "/"}, pkgs...)...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Run()).To(Succeed(), "go build %v", pkgs)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// detectSnapshotter picks overlayfs when an overlay mounts on the work
// dir's file system (tried in a throwaway mount namespace), else native.
func detectSnapshotter() string {
	dir, err := os.MkdirTemp(runDir, "ovl-")
	Expect(err).NotTo(HaveOccurred())
	defer os.RemoveAll(dir)
	for _, d := range []string{"l", "u", "w", "m"} {
		Expect(os.Mkdir(filepath.Join(dir, d), 0o755)).To(Succeed())
	}
	opts := fmt.Sprintf("lowerdir=%s/l,upperdir=%s/u,workdir=%s/w", dir, dir, dir)
	if _, err := command(30*time.Second, nil, "unshare", "--mount", "--propagation", "private", "--",
		"mount", "-t", "overlay", "overlay", "-o", opts, filepath.Join(dir, "m")); err != nil {
		fmt.Fprintf(GinkgoWriter, "overlay does not mount here (%v): native snapshotter\n", err)
		return "native"
	}
	return "overlayfs"
}

// versions names what the suite runs, for the log.
func versions() string {
	var parts []string
	cmds := [][]string{{"containerd", "--version"}, {"runc", "--version"}, {crictlBin, "--version"}}
	if podmanUnavailable == "" {
		cmds = append(cmds, []string{"podman", "--version"}, []string{"conmon", "--version"})
	}
	for _, c := range cmds {
		out, err := command(30*time.Second, nil, c[0], c[1:]...)
		if err != nil {
			parts = append(parts, err.Error())
			continue
		}
		parts = append(parts, strings.SplitN(strings.TrimSpace(out), "\n", 2)[0])
	}
	return strings.Join(parts, "; ")
}
