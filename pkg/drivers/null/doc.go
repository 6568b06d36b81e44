// Package null is the null network driver: its endpoints are recorded
// and go through the whole CNM lifecycle, but a sandbox joined to one
// gets no interface besides its loopback.
package null
