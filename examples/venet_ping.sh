#!/usr/bin/env bash
# Ping a member process through a venet-tap device.
#
# The vbusfs daemon runs in a network namespace of its own, where
# `echo 1 > enabled` makes a real TAP interface. A member process on the bus
# (venet_responder.py) answers ARP and ping for 10.213.0.2 through the venet
# device, and a plain `ping` in that namespace reaches it. Run as root:
#   bash examples/venet_ping.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# the project's own environment (make setup) unless PYTHON names another
if [ -x "$here/../.venv/bin/python" ]; then default="$here/../.venv/bin/python"; else default=python3; fi
python=${PYTHON:-$default}
[ "$(id -u)" = 0 ] || { echo "venet_ping.sh needs root (a network namespace and a TAP)" >&2; exit 1; }

ns=vbusfs-ping-$$
mnt=$(mktemp -d /tmp/vbusfs-ping-XXXXXX)
responder=
cleanup() {
    cd /  # the shell must not hold the mount busy
    [ -z "$responder" ] || { kill "$responder" 2>/dev/null; wait "$responder" 2>/dev/null || true; }
    "$python" -m vbusfs umount "$mnt" 2>/dev/null || true
    ip netns delete "$ns" 2>/dev/null || true
    rmdir "$mnt" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$ns"
in_ns() { nsenter --net="/run/netns/$ns" "$@"; }

echo "# mount vbusfs with its daemon in network namespace $ns"
in_ns "$python" -m vbusfs mount "$mnt"
cd "$mnt"
echo "# a bus, a venet-tap device on it, and its host TAP interface"
mkdir config/vbus/instances/lan config/vbus/devices/tap0
echo venet-tap > config/vbus/devices/tap0/type
echo 1 > sys/vbus/devices/tap0/enabled
ln -s ../../devices/tap0 config/vbus/instances/lan/
tap=$(cat sys/vbus/devices/tap0/ifname)
in_ns ip link set lo up
in_ns ip addr add 10.213.0.1/24 dev "$tap"
in_ns ip link set "$tap" up
echo "# host side: $tap is 10.213.0.1"

ready=$(mktemp)
"$python" "$here/venet_responder.py" "$mnt" lan 10.213.0.2 > "$ready" &
responder=$!
for _ in $(seq 100); do grep -q ready "$ready" && break; sleep 0.05; done
cat "$ready"; rm -f "$ready"

echo "# ping the member process from the host side"
in_ns ping -c 3 -i 0.2 -W 2 10.213.0.2
