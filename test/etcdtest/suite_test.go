package etcdtest_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestEtcdtest(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "etcdtest Suite")
}
