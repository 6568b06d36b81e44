#!/usr/bin/env bash
# make deps (run by make test and make bench): install from Debian what
# the tests drive, each only when what it provides is missing. Needs root
# and apt; Go and its module proxy are prerequisites (see README).
set -euo pipefail

missing=()
need() { # a file or command the package provides, the package
	case "$1" in
	/*) test -e "$1" && return ;;
	*) command -v "$1" >/dev/null 2>&1 && return ;;
	esac
	missing+=("$2")
}
need ip iproute2
need iptables-restore iptables
need ip6tables-restore iptables
need ping iputils-ping
need nsenter util-linux
need unshare util-linux
need flock util-linux
need conntrack conntrack
# The reference plugins the chaining tests run with (Debian's 1.1.1).
need /usr/lib/cni/bridge containernetworking-plugins
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "make deps: missing ${missing[*]}; run as root (the tests need root anyway)" >&2
	exit 1
fi
echo "== installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
