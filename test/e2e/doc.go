// Package e2e is the end-to-end suite of cnmnet: the plugins driven by
// real runtimes, the way nodes drive them: Debian's containerd with its
// CRI plugin and runc, as a kubelet node does, and Debian's podman 4.3
// with its CNI network backend.
//
// The suite runs only with CNM_E2E=1 (make e2e) and as root. Each
// containerd scenario starts its own containerd inside a network namespace
// of its own and a private mount namespace, with this project's freshly
// built plugins in the CNI bin_dir (behind a small tracing wrapper,
// cnitrace) and one conflist of conf/containerd/ in the conf_dir; it
// creates pod sandboxes with crictl from a pause image built locally
// (pause), and checks the pods' networking through their network
// namespaces. Each podman scenario runs podman the same way, in a network
// namespace and a private mount namespace of its own held open by a
// pause process, with the conflists of conf/podman/, and runs containers
// and pods of the same pause image. Nothing touches the root network
// namespace. See the README, "End-to-end tests with containerd and
// podman".
//
// Helper programs: pause (the image's only binary, and the holder of a
// podman scenario's namespaces), cnitrace (the CNI call recorder), launch
// (the mount-namespace set-up that execs containerd or the holder).
package e2e
