"""A deviceclass with a bug on purpose: its attribute raises a plain exception."""

from vbusfs.model import Attribute, DeviceClass


def _broken(state: object) -> str:
    raise RuntimeError("a bug in a deviceclass")


class Buggy(DeviceClass):
    name = "buggy"
    interface_type = "buggy-interface"
    attributes = (Attribute("broken", _broken, lambda state, value: _broken(state)),)
