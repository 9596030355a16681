"""A member process that answers ARP and ping for one IPv4 address on a venet interface.

    python examples/venet_responder.py MOUNTPOINT BUS ADDRESS

It joins BUS, opens interface 0 as a venet device, prints "ready", and
answers until it is interrupted (SIGINT or SIGTERM). `venet_ping.sh` runs it.
"""

from __future__ import annotations

import ipaddress
import signal
import sys
import threading

from vbusfs import client
from vbusfs.testing import serve_host


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    mountpoint, bus_name, address = argv
    ip = ipaddress.IPv4Address(address).packed
    with open(f"{mountpoint}/proc/self/vbus", "w") as f:
        f.write(bus_name)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with client.connect(mountpoint) as bus, bus.open_venet(0) as nic:
        print(f"ready: {address} at {nic.mac.hex(':')} on bus {bus.name}", flush=True)
        serve_host(nic, ip, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
