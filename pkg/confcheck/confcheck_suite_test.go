package confcheck_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestConfcheck(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Confcheck Suite")
}
