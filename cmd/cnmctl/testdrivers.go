//go:build cnmtestdrivers

package main

import "github.com/cnmnet/cnmnet/test/testdriver"

// A test build of cnmctl (go build -tags cnmtestdrivers) also manages the
// networks of the test driver, at both scopes, as the tests make them.
func init() {
	suiteDrivers = append(suiteDrivers, testdriver.Register, testdriver.RegisterGlobal)
}
