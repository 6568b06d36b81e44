// Package testns gives tests network namespaces of their own that are
// removed when the spec ends, pass or fail, so that no test touches the
// root namespace.
package testns

import (
	"errors"
	"os"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
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
	if _, err := os.Stat(n.Path()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return testutils.UnmountNS(n)
}
