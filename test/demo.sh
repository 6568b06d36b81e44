#!/usr/bin/env bash
# make demo: attach throwaway network namespaces through the cnmnet
# plugins with the conflists of conf/, show what they got, clean up;
# then the overlay across three hosts (test/demo-overlay.sh).
# Needs root. Touches nothing outside the namespaces and a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { # command package
	command -v "$1" >/dev/null 2>&1 && return
	echo "== installing $2"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need ip iproute2
need jq jq
need ping iputils-ping
need nc netcat-openbsd
need iptables iptables

work=$(mktemp -d /tmp/cnm-demo.XXXXXX)
host=cnmdemo-host-$$
ctrs=(cnmdemo-a-$$ cnmdemo-b-$$ cnmdemo-c-$$ cnmdemo-d-$$ cnmdemo-e-$$)
cleanup() {
	for n in "${ctrs[@]}" "$host"; do ip netns del "$n" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

# The demo's own copies of conf/, with the store in the temp dir.
mkdir -p "$work/net.d"
for f in conf/*.conflist; do
	jq --arg d "$work/data" '.plugins[0].dataDir = $d' "$f" >"$work/net.d/$(basename "$f")"
done

ip netns add "$host"
ip -n "$host" link set lo up
for n in "${ctrs[@]}"; do ip netns add "$n"; done

# cnitool runs in the demo's host namespace, as a runtime would.
cni() { # verb network container [CNI_ARGS] [CAP_ARGS]
	ip netns exec "$host" env NETCONFPATH="$work/net.d" CNI_PATH="$PWD/bin:/usr/lib/cni" \
		CNI_ARGS="${4:-}" CAP_ARGS="${5:-}" bin/cnitool "$1" "$2" "/run/netns/$3"
}
summary() { jq -c '{ips: [.ips[]?.address], mac: ([.interfaces[]? | select(.sandbox)][0].mac)}'; }
step() { printf '\n== %s\n' "$*"; }

step "ADD container a to network cnm-null (conf/10-cnm-null.conflist)"
cni add cnm-null "${ctrs[0]}" | jq -c .
step "container a's links: only lo, and it is up"
ip -n "${ctrs[0]}" -br link
step "CHECK container a"
cni check cnm-null "${ctrs[0]}" && echo ok
step "STATUS of network cnm-null"
cni status cnm-null "${ctrs[0]}" && echo ready

step "ADD container b as pod default/web-0 (conf/20-cnm-null-pod.conflist: endpointIdentity pod)"
pod="K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"
cni add cnm-null-pod "${ctrs[1]}" "$pod" | jq -c .
step "a second sandbox for the same pod while b holds the endpoint is refused"
cni add cnm-null-pod "${ctrs[2]}" "$pod" 2>&1 | head -n 1 || true
step "DEL container b: the pod's endpoint stays reserved (reservationTTL 24h)"
cni del cnm-null-pod "${ctrs[1]}" "$pod" && echo deleted
step "ADD container c as the re-created pod default/web-0: it joins the same endpoint"
cni add cnm-null-pod "${ctrs[2]}" "$pod" | jq -c .
cni check cnm-null-pod "${ctrs[2]}" "$pod" && echo "CHECK ok"

cni del cnm-null "${ctrs[0]}"
cni del cnm-null "${ctrs[0]}" # DEL is idempotent
cni del cnm-null-pod "${ctrs[2]}" "$pod"

step "cnm-bridge (conf/30-cnm-bridge.conflist): ADD containers a and b"
cni add cnm-bridge "${ctrs[0]}" | summary
ports='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'
step "container b publishes its port 80 as the host's 8080"
cni add cnm-bridge "${ctrs[1]}" "" "$ports" | summary
a_ip=$(ip -n "${ctrs[0]}" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
b_ip=$(ip -n "${ctrs[1]}" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
step "a pings b ($a_ip -> $b_ip)"
ip netns exec "${ctrs[0]}" ping -c 2 -W 2 "$b_ip" | tail -n 2
step "a server in b on port 80, reached from the host namespace at 127.0.0.1:8080"
ip netns exec "${ctrs[1]}" nc -l -p 80 <<<"hello from container b" &
server=$!
sleep 0.3
ip netns exec "$host" nc -w 2 127.0.0.1 8080 </dev/null
wait "$server" 2>/dev/null || true
cni check cnm-bridge "${ctrs[1]}" "" "$ports" && echo "CHECK ok"
cni del cnm-bridge "${ctrs[1]}" "" "$ports"
cni del cnm-bridge "${ctrs[0]}"

step "a persistent endpoint (conf/33-cnm-bridge-pod.conflist): pod default/db-0 in container c"
pod="K8S_POD_NAMESPACE=default;K8S_POD_NAME=db-0"
cni add cnm-bridge-pod "${ctrs[2]}" "$pod" | summary
cni del cnm-bridge-pod "${ctrs[2]}" "$pod" && echo "DEL: the pod is gone, its endpoint stays reserved"
step "another pod takes the next address meanwhile"
cni add cnm-bridge-pod "${ctrs[3]}" "K8S_POD_NAMESPACE=default;K8S_POD_NAME=other" | summary
step "pod default/db-0 re-created in container e: same address, same MAC"
cni add cnm-bridge-pod "${ctrs[4]}" "$pod" | summary
cni del cnm-bridge-pod "${ctrs[4]}" "$pod"
cni del cnm-bridge-pod "${ctrs[3]}" "K8S_POD_NAMESPACE=default;K8S_POD_NAME=other"
echo
echo "done: the namespaces (and with them the bridges and rules) go now"
cleanup
trap - EXIT

# The overlay: three hosts, etcd, cnm-overlayd (test/demo-overlay.sh).
exec bash test/demo-overlay.sh
