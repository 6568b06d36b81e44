// Package cnm is the core of cnmnet: libnetwork's Container Network Model
// (networks, endpoints, sandboxes) kept in a persistent store and driven
// by the CNI verbs.
//
// A Controller is built for one plugin invocation over an open store;
// driver packages register with it through driverapi.Registerer. ADD
// resolves the endpoint's identity, creates the endpoint when it does not
// exist (reserving its address), and joins it to the sandbox named by
// CNI_NETNS. DEL leaves, and deletes the endpoint unless it is
// persistent. CHECK compares the stored endpoint with the sandbox, GC
// removes what no valid attachment or live reservation owns, and STATUS
// tells whether an ADD could succeed.
//
// Every change of state is written to the store before the host is
// touched, so a process killed at any instant leaves a record from which
// DEL or GC can remove what it made.
package cnm
