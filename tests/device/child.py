"""A member process for the framework's mount tests, driven line by line on stdin.

    python child.py MNT BUS [count] [slot_size] [spin_us]

joins BUS, connects, opens its first interface (version 1) with a RequestResponseClient,
prints ``ready``, then answers each command with one line:

``submit TEXT`` / ``complete SECONDS`` / ``request TEXT`` / ``stats`` / ``events`` /
``wait_event SECONDS`` / ``wait_ring SECONDS`` (a wait on the response ring) / ``leave`` /
``close`` / ``exit``

An answer is ``ok``, ``resp TEXT``, ``stats JSON``, ``events KIND:ID:MESSAGE ...`` (a
device event: ``device:ID:DEVICE_KIND:DATA``), or ``error CLASS ERRNO MESSAGE``.
"""

from __future__ import annotations

import json
import sys

from vbusfs import client


def main() -> None:
    mnt, bus_name = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    slot_size = int(sys.argv[4]) if len(sys.argv) > 4 else 4096
    spin: int | str = sys.argv[5] if len(sys.argv) > 5 else 0
    spin_us = spin if spin == "adaptive" else int(spin)
    with open(f"{mnt}/proc/self/vbus", "w") as f:
        f.write(bus_name)
    bus = client.connect(mnt)
    dev = bus.open(bus.interfaces()[0].id, 1)
    rr = client.RequestResponseClient(dev, count=count, slot_size=slot_size, spin_us=spin_us)
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, argument = line.rstrip("\n").partition(" ")
        try:
            if command == "submit":
                rr.submit(argument.encode())
                answer = "ok"
            elif command == "complete":
                answer = "resp " + rr.complete(float(argument)).decode()
            elif command == "request":
                answer = "resp " + rr.request(argument.encode(), 10).decode()
            elif command == "stats":
                answer = "stats " + json.dumps(dev.stats())
            elif command == "events":
                kinds = [f"{e.kind}:{e.interface_id}:{e.message}" for e in bus.events()]
                answer = "events " + " ".join(kinds)
            elif command == "wait_event":
                e = bus.wait_event(float(argument))
                answer = f"events {e.kind}:{e.interface_id}:{e.message}"
                if e.kind == "device":
                    answer += f"{e.device_kind}:{json.dumps(e.data, sort_keys=True)}"
            elif command == "wait_ring":
                rr.responses.wait_receivable(float(argument))
                answer = "ok"
            elif command == "leave":
                with open(f"{mnt}/proc/self/vbus", "w") as f:
                    f.write("0")
                answer = "ok"
            elif command == "close":
                rr.close()
                answer = "ok"
            elif command == "exit":
                print("ok", flush=True)
                return
            else:
                answer = f"error ValueError 0 unknown command {command}"
        except Exception as exc:
            code = getattr(exc, "errno", 0) or 0
            text = getattr(exc, "strerror", None) or str(exc)
            answer = f"error {type(exc).__name__} {code} {text}"
        print(answer, flush=True)


if __name__ == "__main__":
    main()
