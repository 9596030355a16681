"""`vbusfs enet`: the userspace vbus-enet driver, run until a signal ends it."""

from __future__ import annotations

import argparse
import signal
import sys


def main(args: argparse.Namespace) -> int:
    from vbusfs.enet import DEFAULT_SPIN_US, Enet, EnetError

    spin = DEFAULT_SPIN_US if args.spin_us is None else args.spin_us
    try:
        nic = Enet(
            args.mount,
            interface_id=args.id,
            ifname=args.ifname,
            offloads=not args.no_offloads,
            spin_us=spin,
            slots=args.slots,
        )
    except EnetError as exc:
        print(f"vbusfs enet: {exc.strerror}", file=sys.stderr)
        return 1
    stopped: list[int] = []
    with nic:
        # a signal writes its number to the stop fd (in C, whatever Python is doing),
        # which ends the pump; the handler itself only notes which signal it was
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda n, _f: stopped.append(n))
        signal.set_wakeup_fd(nic.stop_fd, warn_on_full_buffer=False)
        offloads = "offloads" if nic.sg else "bare frames"
        print(
            f"vbusfs enet: {nic.ifname} is interface {args.id} of bus {nic.bus} "
            f"(mtu {nic.mtu}, {offloads})",
            flush=True,
        )
        try:
            while not stopped:
                nic.run()
        except EnetError as exc:
            print(f"vbusfs enet: {exc.strerror}", file=sys.stderr)
            return 1
        finally:
            signal.set_wakeup_fd(-1)
    return 0
