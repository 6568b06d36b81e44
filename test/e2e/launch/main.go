// Command launch prepares the private mount namespace the e2e suite runs
// containerd in (or, for a podman scenario, the pause process that holds
// the namespace podman runs in), then execs it.
//
//	nsenter --net=<netns> -- unshare --mount --propagation slave -- \
//	    launch <cgroup-hold-dir> <src>=<dst>... -- containerd --config <file>
//
// It mounts a fresh sysfs (so /sys/class/net shows the interfaces of the
// network namespace it was started in) while keeping the cgroup tree that
// runc needs, bind-mounts each src over dst (the suite's own directories over
// /var/lib/cni, /run/containerd, ...), and execs the rest of its arguments.
// It refuses to run in the mount namespace of its parent or of PID 1: the
// unmount of /sys must never happen in the host's namespace.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "launch: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	sep := -1
	for i, a := range args {
		if a == "--" {
			sep = i
			break
		}
	}
	if sep < 1 || sep == len(args)-1 {
		return fmt.Errorf("usage: launch <cgroup-hold-dir> [<src>=<dst>...] -- <program> [<arg>...]")
	}
	hold, binds, prog := args[0], args[1:sep], args[sep+1:]

	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return err
	}
	for _, pid := range []int{os.Getppid(), 1} {
		other, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		if err != nil && pid == 1 {
			continue // PID 1 may be out of reach (another user namespace): the parent decides
		}
		if err != nil {
			return err
		}
		if other == self {
			return fmt.Errorf("still in the mount namespace of pid %d (%s): start me under unshare --mount", pid, self)
		}
	}

	steps := []struct {
		what string
		do   func() error
	}{
		{"set aside /sys/fs/cgroup", func() error { return unix.Mount("/sys/fs/cgroup", hold, "", unix.MS_BIND|unix.MS_REC, "") }},
		{"detach /sys", func() error { return unix.Unmount("/sys", unix.MNT_DETACH) }},
		{"mount sysfs", func() error {
			return unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		}},
		{"restore /sys/fs/cgroup", func() error { return unix.Mount(hold, "/sys/fs/cgroup", "", unix.MS_BIND|unix.MS_REC, "") }},
		{"detach the cgroup hold", func() error { return unix.Unmount(hold, unix.MNT_DETACH) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	for _, b := range binds {
		src, dst, ok := strings.Cut(b, "=")
		if !ok || src == "" || dst == "" {
			return fmt.Errorf("bad bind %q: want <src>=<dst>", b)
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", src, dst, err)
		}
	}
	path, err := exec.LookPath(prog[0])
	if err != nil {
		return err
	}
	return unix.Exec(path, prog, os.Environ())
}
