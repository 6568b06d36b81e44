#!/usr/bin/env bash
# make demo, the overlay part (test/demo.sh runs it last): three hosts
# as network namespaces on an underlay bridge, a real etcd as their
# cluster store, cnm-overlayd on each host, containers on one cnm-overlay
# network pinging across hosts, and a pod's persistent endpoint moved
# from one host to another with its address and MAC.
# Needs root. Touches nothing outside the namespaces and a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { # command package
	command -v "$1" >/dev/null 2>&1 && return
	echo "== installing $2"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need ip iproute2
need bridge iproute2
need jq jq
need ping iputils-ping
need iptables iptables
for b in cnm-overlay cnm-overlayd cnmctl cnitool cnm-testetcd; do
	[ -x "bin/$b" ] || { echo "bin/$b is missing: run make build tools (make demo does)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/cnm-demo.XXXXXX)
underlay=cnmdemo-ul-$$
hosts=(h1 h2 h3)          # the hosts' names in the cluster store
declare -A hostns         # host -> its namespace
for h in "${hosts[@]}"; do hostns[$h]=cnmdemo-$h-$$; done
# The containers: o1-o3 on network cnm-overlay, one per host; p1 and p2
# the pod that moves from h1 to h2, q3 its client on h3.
declare -A ctr
for c in o1 o2 o3 p1 p2 q3; do ctr[$c]=cnmdemo-$c-$$; done
etcd_pid=
declare -A daemon_pid     # host -> its cnm-overlayd
sock=$work/etcd.sock
cleanup() {
	for h in "${!daemon_pid[@]}"; do kill -TERM "${daemon_pid[$h]}" 2>/dev/null || true; done
	for h in "${!daemon_pid[@]}"; do wait "${daemon_pid[$h]}" 2>/dev/null || true; done
	if [ -n "$etcd_pid" ]; then kill -TERM "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; fi
	for n in "${ctr[@]}"; do
		# cnitool's cached result, left by an ADD the demo did not get to DEL
		# (cnitool names a container after its netns path).
		id=cnitool-$(printf %s "/run/netns/$n" | sha512sum | cut -c1-20)
		rm -f /var/lib/cni/results/cnm-overlay-"$id"-eth0 /var/lib/cni/results/cnm-overlay-pod-"$id"-eth0
	done
	for n in "${ctr[@]}" "${hostns[@]}" "$underlay"; do ip netns del "$n" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
step() { printf '\n== %s\n' "$*"; }
summary() { jq -c '{ips: [.ips[]?.address], mac: ([.interfaces[]? | select(.sandbox)][0].mac)}'; }

step "overlay: an underlay bridge and three hosts on it, 192.168.90.1-3/24, default route via the underlay"
ip netns add "$underlay"
ip -n "$underlay" link set lo up
ip -n "$underlay" link add name ul type bridge
ip -n "$underlay" link set ul up
i=0
for h in "${hosts[@]}"; do
	i=$((i + 1))
	n=${hostns[$h]}
	ip netns add "$n"
	ip -n "$n" link set lo up
	ip -n "$underlay" link add "$h" master ul type veth peer name eth0 netns "$n"
	ip -n "$underlay" link set "$h" up
	ip -n "$n" addr add "192.168.90.$i/24" dev eth0
	ip -n "$n" link set eth0 up
	# The plugin and the daemon take the VTEP from the default route.
	ip -n "$n" route add default via 192.168.90.254 dev eth0
	ip -n "$n" -br addr show eth0
done

# etcd runs in the underlay namespace, so that its peer port is that
# namespace's loopback; clients reach it on a pathname unix socket in the
# temp dir, which every namespace can.
step "a one-member etcd (bin/cnm-testetcd) on unix://$sock"
ip netns exec "$underlay" bin/cnm-testetcd -data-dir "$work/etcd" -listen-client "unix://$sock" \
	-listen-peer http://127.0.0.1:2380 -unsafe-no-fsync >"$work/etcd.out" 2>"$work/etcd.log" &
etcd_pid=$!
for _ in $(seq 600); do
	grep -qx ready "$work/etcd.out" 2>/dev/null && break
	kill -0 "$etcd_pid" 2>/dev/null || { cat "$work/etcd.log" >&2; exit 1; }
	sleep 0.1
done
grep -qx ready "$work/etcd.out" || { echo "etcd not ready after 60s" >&2; cat "$work/etcd.log" >&2; exit 1; }
echo ready

# Each host's copies of conf/4*-cnm-overlay*.conflist: the demo's etcd
# (plain, no TLS), the host's name and a store of its own.
for h in "${hosts[@]}"; do
	mkdir -p "$work/$h/net.d"
	for f in conf/4*-cnm-overlay*.conflist; do
		jq --arg d "$work/$h/data" --arg h "$h" --arg e "unix://$sock" \
			'.plugins[0] |= (.dataDir = $d | .host = $h | .cluster.etcd = {endpoints: [$e]})' \
			"$f" >"$work/$h/net.d/$(basename "$f")"
	done
done

step "cnm-overlayd on each host (in its namespace; --host hX, metrics off)"
for h in "${hosts[@]}"; do
	ip netns exec "${hostns[$h]}" bin/cnm-overlayd --etcd-endpoints "unix://$sock" --host "$h" \
		--metrics-address "" 2>"$work/$h/overlayd.log" &
	daemon_pid[$h]=$!
done
# Each logs "registered" once its host is in the store (hostinfo/<host>).
for _ in $(seq 300); do
	ok=0
	for h in "${hosts[@]}"; do grep -q 'msg=registered' "$work/$h/overlayd.log" && ok=$((ok + 1)); done
	[ "$ok" = "${#hosts[@]}" ] && break
	sleep 0.1
done
for h in "${hosts[@]}"; do
	kill -0 "${daemon_pid[$h]}" 2>/dev/null || { echo "cnm-overlayd on $h exited:" >&2; cat "$work/$h/overlayd.log" >&2; exit 1; }
done
echo "running: ${hosts[*]}"

# cnitool runs in a host's namespace, as that host's runtime would.
cni() { # verb host network container [CNI_ARGS]
	ip netns exec "${hostns[$2]}" env NETCONFPATH="$work/$2/net.d" CNI_PATH="$PWD/bin" \
		CNI_ARGS="${5:-}" bin/cnitool "$1" "$3" "/run/netns/$4"
}
ipof() { ip -n "$1" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; }
# ping until two replies, for up to 10 s: the other hosts' daemons
# program a new endpoint within milliseconds, the first ADD at once.
pingfrom() { ip netns exec "$1" ping -c 2 -w 10 "$2" | tail -n 2; }

step "ADD a container on each host to network cnm-overlay (conf/40-cnm-overlay.conflist)"
for n in "${ctr[@]}"; do
	ip netns add "$n"
	ip -n "$n" link set lo up
done
c1=${ctr[o1]} c2=${ctr[o2]} c3=${ctr[o3]}
cni add h1 cnm-overlay "$c1" | summary
cni add h2 cnm-overlay "$c2" | summary
cni add h3 cnm-overlay "$c3" | summary
ip1=$(ipof "$c1") ip2=$(ipof "$c2") ip3=$(ipof "$c3")
step "the container on h1 pings h2's ($ip1 -> $ip2) and h3's ($ip1 -> $ip3), across the VXLAN tunnel"
pingfrom "$c1" "$ip2"
pingfrom "$c1" "$ip3"
step "and h3's pings h2's ($ip3 -> $ip2)"
pingfrom "$c3" "$ip2"
cni check h2 cnm-overlay "$c2" && echo "CHECK on h2 ok: data plane and forwarding entries complete"

cnmctl() { # host args...: cnmctl on the cluster store, as host h sees it
	local h=$1
	shift
	ip netns exec "${hostns[$h]}" bin/cnmctl --etcd-endpoints "unix://$sock" --host "$h" --data-dir "$work/$h/data" "$@"
}
step "cnmctl network ls / endpoint ls on the cluster store"
cnmctl h1 network ls
cnmctl h1 endpoint ls --network cnm-overlay

step "a persistent endpoint (conf/41-cnm-overlay-pod.conflist): pod default/db-0 on h1"
pod="K8S_POD_NAMESPACE=default;K8S_POD_NAME=db-0"
client="K8S_POD_NAMESPACE=default;K8S_POD_NAME=client-0"
p1=${ctr[p1]} p2=${ctr[p2]} q3=${ctr[q3]}
cni add h1 cnm-overlay-pod "$p1" "$pod" | summary
db=$(ipof "$p1")
mac=$(ip -n "$p1" -br link show eth0 | awk '{print $3}')
step "a client pod on h3 reaches it on h1 ($db)"
cni add h3 cnm-overlay-pod "$q3" "$client" | summary
pingfrom "$q3" "$db"
bridge -n "${hostns[h3]}" fdb show | grep -i "^$mac .*dst" || true
step "DEL on h1: the pod is gone there, its endpoint stays reserved"
cni del h1 cnm-overlay-pod "$p1" "$pod" && echo deleted
step "pod default/db-0 re-created on h2: same address, same MAC"
cni add h2 cnm-overlay-pod "$p2" "$pod" | summary
[ "$(ipof "$p2")" = "$db" ] && [ "$(ip -n "$p2" -br link show eth0 | awk '{print $3}')" = "$mac" ] ||
	{ echo "the moved endpoint lost its address or MAC" >&2; exit 1; }
step "the client on h3 reaches it at its new place (h3 now forwards $mac to h2's VTEP 192.168.90.2)"
for _ in $(seq 100); do
	bridge -n "${hostns[h3]}" fdb show | grep -qi "^$mac .*dst 192.168.90.2" && break
	sleep 0.1
done
bridge -n "${hostns[h3]}" fdb show | grep -i "^$mac .*dst"
pingfrom "$q3" "$db"
cnmctl h3 endpoint ls --network cnm-overlay-pod

cni del h3 cnm-overlay-pod "$q3" "$client"
cni del h2 cnm-overlay-pod "$p2" "$pod"
cni del h1 cnm-overlay "$c1"
cni del h2 cnm-overlay "$c2"
cni del h3 cnm-overlay "$c3"

step "SIGTERM to each cnm-overlayd: it exits 0 and leaves the data plane in place"
for h in "${hosts[@]}"; do
	kill -TERM "${daemon_pid[$h]}"
	rc=0
	wait "${daemon_pid[$h]}" || rc=$?
	unset "daemon_pid[$h]"
	echo "$h: exit $rc"
	[ "$rc" = 0 ] || { cat "$work/$h/overlayd.log" >&2; exit 1; }
done
echo
echo "done: etcd stops, the namespaces (and with them the bridges, VXLAN devices and rules) go now"
