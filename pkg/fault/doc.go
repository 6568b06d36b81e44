// Package fault marks the instants at which the reliability tests kill a
// plugin process. In a normal build Point does nothing and costs nothing;
// in a build with the tag cnmfault, a process whose CNM_FAULT environment
// variable names a point kills itself there with SIGKILL, exactly as a
// runtime's timeout or an OOM kill would.
package fault

// Env names the point at which a cnmfault build kills itself.
const Env = "CNM_FAULT"
