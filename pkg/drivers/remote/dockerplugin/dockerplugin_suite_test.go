package dockerplugin_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestDockerPlugin(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "dockerplugin")
}
