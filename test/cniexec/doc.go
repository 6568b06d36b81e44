// Package cniexec runs a CNI plugin binary as a runtime does: inside a
// network namespace (the "host" the plugin runs on), with the CNI_*
// environment and the network configuration on stdin. A plugin that
// fails hands back the CNI error object it printed on stdout, so that
// specs check its code and message as a runtime would see them.
//
// It is what the data-path suites (test/integration, test/overlay,
// test/remote, test/cluster) share of their harnesses; each keeps its
// own helpers around it, with its own defaults.
package cniexec
