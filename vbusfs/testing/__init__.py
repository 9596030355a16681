"""vbusfs.testing: the public kit for testing with and against vbusfs.

Live mounts (`_mount`): `LiveMount(path, private_netns=..., load=...)` starts a
daemon for one mount and always cleans up (`stop()`, or use it as a context
manager); `SharedMount(parent)` is one daemon many tests use in turn (`acquire`,
`release`: reset between them; what `vbus_mount` uses); `fuse_problem()` says why
no FUSE mount can be made here (or None); `netns_available()`; `stop_all()` stops
every LiveMount still running.

In-process models (`_fakes`): `host_free_model(load=(), taps=None)` is a
`Vbus` with every discovered deviceclass, venet-tap on a `FakeTapFactory`
(`FakeTap`), so nothing touches the host.

pytest fixtures (`_plugin`, registered as the `vbusfs` pytest11 plugin, so
installing vbusfs is enough): `vbus_model`, `vbus_mount`, and the
overridable `vbus_load` and `vbus_tap_factory`.

hypothesis strategies (`_strategies`): `names`, `invalid_names` (`InvalidName`),
`mac_addresses`, `mac_bytes`, `canonical_mac`, `invalid_mac_addresses`;
attribute values as `AttributeValues` tables (`_values`; `attribute_values`,
`interface_attribute_values`, `choice_values`, `integer_values`, `MAC_VALUES`,
`BOOL_VALUES`, `U32_VALUES`); topologies (`topology_plans` drawing a `Plan` of
`CreateBus`, `CreateDevice`, `SetType`, `StoreAttribute`, `Link`,
`StoreInterfaceAttribute` steps; `apply_plan`, `apply_plan_to_mount`,
`topologies`).

The conformance machine (`_conformance`): `DeviceClassConformance`, a
`RuleBasedStateMachine` a deviceclass author subclasses to check the
contract of their class, data path included (`Opened` is what its data-path
hooks receive); `run_through_mount` runs it against a live mount.

The data-path harness (`_harness`): `DeviceHarness` runs a class's data path
through the daemon's own connector in this process (no FUSE, no daemon
process): `open()` gives a `HarnessInterface` (a `vbusfs.client.OpenInterface`
with its connection's `ConnectionProbe`), `request_response()` a
`RequestResponseClient`, `end(interface, ending)` ends it in one of `ENDINGS`
and checks the framework's guarantees; `ProbedVbus`, `ring_shape`.

A tiny IPv4 host for data-path tests (`_host`): `serve_host`, `reply_to`, `checksum`,
`offload_udp_frame`, `offload_tcp_segment` with its `tso_header`.

Each module's docstring documents its part in full. Every name but the tiny
host's is imported on first use: the strategies and the conformance machine
need hypothesis (the `vbusfs[testing]` extra; without it, using one of their
names raises ModuleNotFoundError saying what to install), the fakes and mounts
the daemon's code, and the pytest plugin, loaded into every pytest run of the
environment, should cost nothing and fail for no test that does not use it.
"""

from typing import TYPE_CHECKING, Any

from ._host import (
    checksum,
    offload_tcp_segment,
    offload_udp_frame,
    reply_to,
    serve_host,
    tso_header,
)

if TYPE_CHECKING:
    from ._conformance import DeviceClassConformance
    from ._conformance_data import Opened
    from ._fakes import FakeTap, FakeTapFactory, host_free_model
    from ._harness import (
        ENDINGS,
        ConnectionProbe,
        DeviceHarness,
        HarnessClient,
        HarnessInterface,
        ProbedVbus,
        ring_shape,
    )
    from ._mount import LiveMount, SharedMount, fuse_problem, netns_available, stop_all
    from ._strategies import (
        BOOL_VALUES,
        MAC_VALUES,
        SIMPLE_NAME_ALPHABET,
        U32_VALUES,
        AttributeValues,
        CreateBus,
        CreateDevice,
        InvalidName,
        Link,
        Plan,
        SetType,
        Step,
        StoreAttribute,
        StoreInterfaceAttribute,
        apply_plan,
        apply_plan_to_mount,
        attribute_values,
        canonical_mac,
        choice_values,
        integer_values,
        interface_attribute_values,
        invalid_mac_addresses,
        invalid_names,
        mac_addresses,
        mac_bytes,
        names,
        topologies,
        topology_plans,
    )

# public name -> the private module that defines it, imported on first use: the
# strategies and the machine need hypothesis, the fakes and mounts load the daemon's
# code; so `import vbusfs.testing` (done by the pytest plugin in every run) stays cheap
_LAZY = {"DeviceClassConformance": "_conformance", "Opened": "_conformance_data"}
_LAZY.update(
    dict.fromkeys(
        [
            "ENDINGS",
            "ConnectionProbe",
            "DeviceHarness",
            "HarnessClient",
            "HarnessInterface",
            "ProbedVbus",
            "ring_shape",
        ],
        "_harness",
    )
)
_LAZY.update(dict.fromkeys(["FakeTap", "FakeTapFactory", "host_free_model"], "_fakes"))
_LAZY.update(
    dict.fromkeys(
        ["LiveMount", "SharedMount", "fuse_problem", "netns_available", "stop_all"], "_mount"
    )
)
_LAZY.update(
    dict.fromkeys(
        [
            "BOOL_VALUES",
            "MAC_VALUES",
            "SIMPLE_NAME_ALPHABET",
            "U32_VALUES",
            "AttributeValues",
            "CreateBus",
            "CreateDevice",
            "InvalidName",
            "Link",
            "Plan",
            "SetType",
            "Step",
            "StoreAttribute",
            "StoreInterfaceAttribute",
            "apply_plan",
            "apply_plan_to_mount",
            "attribute_values",
            "canonical_mac",
            "choice_values",
            "integer_values",
            "interface_attribute_values",
            "invalid_mac_addresses",
            "invalid_names",
            "mac_addresses",
            "mac_bytes",
            "names",
            "topologies",
            "topology_plans",
        ],
        "_strategies",
    )
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    try:
        imported = importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as error:
        if error.name != "hypothesis" and not str(error.name).startswith("hypothesis."):
            raise
        raise ModuleNotFoundError(
            f"vbusfs.testing.{name} needs hypothesis, which is not installed here: "
            "pip install 'vbusfs[testing]' (the pytest fixtures vbus_model and vbus_mount "
            "work without it)",
            name="hypothesis",
        ) from error
    value = getattr(imported, name)
    globals()[name] = value
    return value


__all__ = [
    "BOOL_VALUES",
    "ENDINGS",
    "MAC_VALUES",
    "SIMPLE_NAME_ALPHABET",
    "U32_VALUES",
    "AttributeValues",
    "ConnectionProbe",
    "CreateBus",
    "CreateDevice",
    "DeviceClassConformance",
    "DeviceHarness",
    "FakeTap",
    "FakeTapFactory",
    "HarnessClient",
    "HarnessInterface",
    "InvalidName",
    "Link",
    "LiveMount",
    "Opened",
    "Plan",
    "ProbedVbus",
    "SetType",
    "SharedMount",
    "Step",
    "StoreAttribute",
    "StoreInterfaceAttribute",
    "apply_plan",
    "apply_plan_to_mount",
    "attribute_values",
    "canonical_mac",
    "checksum",
    "choice_values",
    "fuse_problem",
    "host_free_model",
    "integer_values",
    "interface_attribute_values",
    "invalid_mac_addresses",
    "invalid_names",
    "mac_addresses",
    "mac_bytes",
    "names",
    "netns_available",
    "offload_tcp_segment",
    "offload_udp_frame",
    "reply_to",
    "ring_shape",
    "serve_host",
    "stop_all",
    "topologies",
    "topology_plans",
    "tso_header",
]
