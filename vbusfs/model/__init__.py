"""The vbus object model: deviceclasses, devices, buses, interfaces, members.

Pure and synchronous: nothing here imports pyfuse3, trio, os or cffi, and
nothing here does I/O (deviceclass plugins may, inside their own steps).
"""

from ._attributes import Attribute, AttributeTable, attribute_mode
from ._config import ConfigError
from ._config import dump as dump_config
from ._config import restore as restore_config
from ._deviceclass import DeviceClass, DeviceConnection, InterfaceInfo
from ._errors import (
    AccessDenied,
    AlreadyExists,
    Busy,
    InvalidValue,
    IsADirectory,
    NameTooLong,
    NoDevice,
    NoSpace,
    NoSuchProcess,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
    VbusError,
)
from ._membership import (
    Inferred,
    MembershipBackend,
    ProcessInfo,
    ProcessPin,
    ProcessTable,
    process_of,
)
from ._names import (
    BUS_ENTRIES,
    CLASS_ENTRY,
    DEVICE_ENTRIES,
    DEVICE_ENTRY,
    INTERFACE_ENTRIES,
    INTERFACES_ENTRY,
    LEAVE_TOKEN,
    NAME_MAX,
    NO_BUS,
    PERMS_ENTRY,
    TYPE_ENTRY,
    check_bus_name,
    check_name,
)
from ._objects import AttributeOwner, Bus, Device, Interface
from ._perms import DEFAULT_MODE, PERMS_ATTRIBUTES, BusPerms
from ._pids import (
    BLIND,
    PID_MAX_LIMIT,
    BlindView,
    IdentityView,
    PidView,
    TableView,
    plausible_pid,
)
from ._vbus import MAX_INTERFACE_IDS, Event, Listener, Vbus

__all__ = [
    "BLIND",
    "BUS_ENTRIES",
    "CLASS_ENTRY",
    "DEFAULT_MODE",
    "DEVICE_ENTRIES",
    "DEVICE_ENTRY",
    "INTERFACES_ENTRY",
    "INTERFACE_ENTRIES",
    "LEAVE_TOKEN",
    "MAX_INTERFACE_IDS",
    "NAME_MAX",
    "NO_BUS",
    "PERMS_ATTRIBUTES",
    "PERMS_ENTRY",
    "PID_MAX_LIMIT",
    "TYPE_ENTRY",
    "AccessDenied",
    "AlreadyExists",
    "Attribute",
    "AttributeOwner",
    "AttributeTable",
    "BlindView",
    "Bus",
    "BusPerms",
    "Busy",
    "ConfigError",
    "Device",
    "DeviceClass",
    "DeviceConnection",
    "Event",
    "IdentityView",
    "Inferred",
    "Interface",
    "InterfaceInfo",
    "InvalidValue",
    "IsADirectory",
    "Listener",
    "MembershipBackend",
    "NameTooLong",
    "NoDevice",
    "NoSpace",
    "NoSuchProcess",
    "NotADirectory",
    "NotEmpty",
    "NotFound",
    "NotPermitted",
    "NotSupported",
    "PidView",
    "ProcessInfo",
    "ProcessPin",
    "ProcessTable",
    "TableView",
    "Vbus",
    "VbusError",
    "attribute_mode",
    "check_bus_name",
    "check_name",
    "dump_config",
    "plausible_pid",
    "process_of",
    "restore_config",
]
