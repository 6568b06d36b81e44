// Package etcdtest runs a real etcd v3 cluster for the tests: one member,
// or several (3) for fault tests, each a child process (cnm-testetcd)
// that a test can SIGKILL and restart with its data.
//
// Clients reach a member on a pathname unix socket under the test's
// directory, which is reachable from every network namespace (the
// plugins under test run in namespaces that act as hosts); members reach
// each other on free loopback TCP ports of the test process's namespace.
// A member dies with the test process (Pdeathsig), so a crashed test
// leaves no etcd behind.
//
// In a ginkgo spec:
//
//	c := etcdtest.StartForTest(GinkgoT(), etcdtest.Options{Members: 3})
//	cli, err := c.Client() // closed by the caller
//	...
//	Expect(c.Kill(0, 1)).To(Succeed()) // quorum lost
//	Expect(c.Restart(1)).To(Succeed())  // quorum back
//
// StartForTest stops the cluster when the spec ends, pass or fail, and
// then writes the members' logs to the spec's output if it failed.
//
// Layout under the directory: m<i>.sock (client socket), m<i>/ (data),
// m<i>.log (the member's stderr), tls/ (certificates, with TLS). Socket
// paths are limited to 107 bytes, so the directory must be short; a
// ginkgo or testing TempDir is.
//
// TLS: with Options.TLS the members listen on unixs:// URLs, present a
// server certificate and require a client certificate, both signed by a
// CA made for the cluster (ECDSA P-256). The etcd client verifies a
// unix socket endpoint against the socket file's base name (for
// unixs:///d/m0.sock, the server name is "m0.sock"), so the server
// certificate carries every member's socket name as a DNS name, besides
// "localhost" and 127.0.0.1; a client needs no ServerName of its own.
//
// The member binary is $CNM_BIN_DIR/cnm-testetcd when that exists (make
// builds it into bin/), else it is built once per test process with
// `go build` into the user's cache directory.
package etcdtest
