// Package testdriver is a driver for the tests of the core: it asks the
// core for addresses and gives each sandbox one end of a veth pair, so
// that the core's IPAM, persistence and sandbox paths run on real links
// without the bridge driver. It is not shipped.
//
// For crash tests, a binary built with it honours CNM_TESTDRIVER_HANG:
// "create" or "join" makes it wait at that step until it is killed.
package testdriver
