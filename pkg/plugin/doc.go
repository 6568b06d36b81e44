// Package plugin is the CNI side of every cnmnet binary: it reads the
// runtime's request, opens the store, builds a cnm.Controller with the
// binary's drivers and runs the verb, answering with a CNI result or a
// CNI error. A binary's main is one call to Main.
package plugin
