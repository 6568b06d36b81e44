#!/usr/bin/env bash
# make demo: attach throwaway network namespaces through the cnmnet
# plugins with the conflists of conf/, show what they got, clean up.
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

work=$(mktemp -d /tmp/cnm-demo.XXXXXX)
host=cnmdemo-host-$$
ctrs=(cnmdemo-a-$$ cnmdemo-b-$$ cnmdemo-c-$$)
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
for n in "${ctrs[@]}"; do ip netns add "$n"; done

# cnitool runs in the demo's host namespace, as a runtime would.
cni() { # verb network container [CNI_ARGS]
	ip netns exec "$host" env NETCONFPATH="$work/net.d" CNI_PATH="$PWD/bin" CNI_ARGS="${4:-}" \
		bin/cnitool "$1" "$2" "/run/netns/$3"
}
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

step "DEL everything (DEL is idempotent: twice)"
cni del cnm-null "${ctrs[0]}"
cni del cnm-null "${ctrs[0]}"
cni del cnm-null-pod "${ctrs[2]}" "$pod"
echo done
