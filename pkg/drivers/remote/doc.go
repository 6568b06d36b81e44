// Package remote is libnetwork's remote driver as a CNI plugin's
// (network type "cnm-remote"): every CNM driver call of a network is
// forwarded to a Docker network plugin, found by name as the Docker
// daemon finds it (package dockerplugin) or at a socket the
// configuration names, so that any driver written for Docker serves
// CNI runtimes.
//
// A plugin invocation is a short process, so what the Docker daemon
// keeps in memory for a remote driver is in the driver's store: the
// plugin of each network (by name or socket, looked up at each call, so
// that a plugin restarted elsewhere is found), its capabilities, and
// the endpoints it was told of. Each is recorded before the plugin is
// called, so that a call that fails or is never answered is undone (the
// core's rollback calls Leave, DeleteEndpoint and DeleteNetwork, which
// forward what the records name).
//
// A plugin that cannot be reached makes ADD answer 11 (try again later)
// and STATUS 50. Leave, DeleteEndpoint and DeleteNetwork never keep the
// core from releasing what it holds: a call the plugin did not answer
// is recorded as pending (and said on stderr), sent again before the
// next call concerning its network and by STATUS, and listed and
// finished by cnmctl check (the driver's Janitor).
//
// A network has its plugin's scope (scope.go): a global-scope plugin's
// networks are in the cluster store, shared by every host, with what
// each host's plugin made and is owed kept under that host; the plugin
// is told of its own host by node discovery (discovery.go).
package remote
