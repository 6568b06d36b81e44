// Package testudp gives tests a UDP echo server and a UDP client that
// keeps one flow (a fixed source address, as a DNS or syslog client
// does) in a network namespace of theirs: what a stale conntrack entry
// black-holes.
package testudp

import (
	"net"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// Echo answers every datagram to addr in n with "echo" until the spec
// ends.
func Echo(n ns.NetNS, addr string) {
	GinkgoHelper()
	var c net.PacketConn
	Expect(n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.ListenPacket("udp4", addr)
		return err
	})).To(Succeed())
	DeferCleanup(c.Close)
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo([]byte("echo"), from)
		}
	}()
}

// Flow is a UDP client in a namespace, bound to one source address.
type Flow struct {
	c   *net.UDPConn
	dst *net.UDPAddr
}

// NewFlow binds src in n for datagrams to dst; it is closed when the
// spec ends.
func NewFlow(n ns.NetNS, src, dst string) *Flow {
	GinkgoHelper()
	f := &Flow{}
	var err error
	f.dst, err = net.ResolveUDPAddr("udp4", dst)
	Expect(err).NotTo(HaveOccurred())
	Expect(n.Do(func(ns.NetNS) error {
		la, err := net.ResolveUDPAddr("udp4", src)
		if err != nil {
			return err
		}
		f.c, err = net.ListenUDP("udp4", la)
		return err
	})).To(Succeed())
	DeferCleanup(f.c.Close)
	return f
}

// Ask sends a datagram and returns the answer.
func (f *Flow) Ask() (string, error) {
	if _, err := f.c.WriteTo([]byte("ping"), f.dst); err != nil {
		return "", err
	}
	_ = f.c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
	buf := make([]byte, 64)
	n, _, err := f.c.ReadFrom(buf)
	return string(buf[:n]), err
}

// Answer is Ask's answer, "" when none came.
func (f *Flow) Answer() string {
	s, err := f.Ask()
	if err != nil {
		return ""
	}
	return s
}
