package integration_test

import (
	"fmt"
	"io"
	"net"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// serve listens on addr inside n and answers every connection with the
// address it came from, until the test ends.
func serve(n ns.NetNS, network, addr string) {
	var l net.Listener
	Expect(n.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})).To(Succeed())
	DeferCleanup(l.Close)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, c.RemoteAddr().String())
			_ = c.Close()
		}
	}()
}

// dial connects from inside n to addr and returns the source address the
// server saw.
func dial(n ns.NetNS, addr string) (string, error) {
	var seen string
	err := n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, 1500*time.Millisecond)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		host, _, err := net.SplitHostPort(string(b))
		seen = host
		return err
	})
	return seen, err
}

// ping sends one echo request from inside n.
func ping(n ns.NetNS, src, dst string) error {
	return n.Do(func(ns.NetNS) error { return testutils.Ping(src, dst, 2) })
}

// expectBlocked asserts that a connection from n to addr does not get through.
func expectBlocked(n ns.NetNS, addr string) {
	_, err := dial(n, addr)
	ExpectWithOffset(1, err).To(HaveOccurred(), fmt.Sprintf("%s should be unreachable", addr))
}
