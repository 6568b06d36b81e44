// Package testns gives tests network namespaces of their own that are
// removed when the spec ends, pass or fail, so that no test touches the
// root namespace.
package testns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// New makes a network namespace that goes when the current spec ends.
func New() ns.NetNS {
	GinkgoHelper()
	n, err := testutils.NewNS()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(Remove(n)).To(Succeed()) })
	return n
}

// Remove closes n and then unmounts it (the open handle pins the mount).
// Removing a namespace that is gone already is not an error, so that a
// test may remove one early.
func Remove(n ns.NetNS) error {
	_ = n.Close() // fails only when closed already
	path := n.Path()
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// Not testutils.UnmountNS: it leaves alone a path outside its own
	// directory (/var/run/netns), such as NewAt's /run/netns/<name>.
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// NewAt makes a network namespace bound at path, a file that must not
// exist, as `ip netns add` does under /run/netns: the way to make a
// namespace again under the path of one that was removed. It goes when
// the current spec ends.
func NewAt(path string) ns.NetNS {
	GinkgoHelper()
	Expect(bindNew(path)).To(Succeed())
	n, err := ns.GetNS(path)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(Remove(n)).To(Succeed()) })
	return n
}

// bindNew unshares a new network namespace on a thread of its own and
// bind-mounts it at path. The thread is never unlocked, so the runtime
// discards it rather than reuse a thread whose namespace changed.
func bindNew(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	_ = f.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		done <- unix.Mount(self, path, "none", unix.MS_BIND, "")
	}()
	if err := <-done; err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("bind a new netns at %s: %w", path, err)
	}
	return nil
}

// UpLoopback sets lo up in n, as it is on a host and is not in a new
// namespace.
func UpLoopback(n ns.NetNS) {
	GinkgoHelper()
	Expect(n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})).To(Succeed())
}

// LinkNames lists the names of n's links, lo included.
func LinkNames(n ns.NetNS) []string {
	GinkgoHelper()
	var names []string
	Expect(n.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})).To(Succeed())
	return names
}

// Interface is the MAC and the global unicast addresses (as CIDRs) of
// link name in n.
func Interface(n ns.NetNS, name string) (mac string, addrs []string) {
	GinkgoHelper()
	Expect(n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		mac = l.Attrs().HardwareAddr.String()
		list, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		for _, a := range list {
			if a.IP.IsGlobalUnicast() {
				addrs = append(addrs, a.IPNet.String())
			}
		}
		return err
	})).To(Succeed())
	return mac, addrs
}

// Get fetches url with a client whose connections are dialled from inside
// n, as a process there would: for a daemon that listens on a namespace's
// loopback. It returns the status code and the body.
func Get(n ns.NetNS, url string) (int, string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := n.Do(func(ns.NetNS) error {
			var err error
			c, err = (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 2 * time.Second}).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
