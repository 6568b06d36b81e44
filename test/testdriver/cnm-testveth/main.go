// Command cnm-testveth is the test driver's plugin, for the core's tests.
package main

import (
	"github.com/cnmnet/cnmnet/pkg/plugin"
	"github.com/cnmnet/cnmnet/test/testdriver"
)

func main() {
	plugin.Main(testdriver.NetworkType, testdriver.Register)
}
