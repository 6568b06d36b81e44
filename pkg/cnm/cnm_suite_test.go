package cnm_test

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestCNM(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "CNM Suite")
}

// expectCNIError checks that err is (or wraps) a *types.Error with code,
// whose message mentions every one of mentions.
func expectCNIError(err error, code uint, mentions ...string) *types.Error {
	GinkgoHelper()
	Expect(err).To(HaveOccurred())
	var te *types.Error
	Expect(errors.As(err, &te)).To(BeTrue(), "%T %v is not a *types.Error", err, err)
	Expect(te.Code).To(Equal(code), "code of %q", te.Msg)
	for _, m := range mentions {
		Expect(te.Msg).To(ContainSubstring(m))
	}
	return te
}
