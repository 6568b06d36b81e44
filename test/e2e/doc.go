// Package e2e is the end-to-end suite of cnmnet: the plugins driven by a
// real CRI runtime, Debian's containerd with runc, the way a kubelet node
// drives them.
//
// The suite runs only with CNM_E2E=1 (make e2e) and as root. Each scenario
// starts its own containerd inside a network namespace of its own and a
// private mount namespace, with this project's freshly built plugins in
// the CNI bin_dir (behind a small tracing wrapper, cnitrace) and one
// conflist of conf/containerd/ in the conf_dir; it creates pod sandboxes
// with crictl from a pause image built locally (pause), and checks the
// pods' networking through their network namespaces. Nothing touches the
// root network namespace. See the README, "End-to-end tests with
// containerd".
//
// Helper programs: pause (the image's only binary), cnitrace (the CNI call
// recorder), launch (the mount-namespace set-up that execs containerd).
package e2e
