// Package integration tests the cnmnet plugins as a runtime drives them:
// built binaries exec'd through libcni, cnitool and a raw exec, and the
// same verbs in-process, all inside network namespaces the tests make.
package integration
