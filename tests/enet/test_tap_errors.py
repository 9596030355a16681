"""What the two TAP makers do when the host refuses a `vbusfs._tun` step: the errno and
wording the caller gets, and that no descriptor is left open. No privileges needed:
each host step is replaced by one that raises, and a descriptor is the read end of a
pipe (closed exactly when writing to its other end breaks)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator

import pytest

from vbusfs import _tun
from vbusfs.classes._tap import TapInterface
from vbusfs.enet._tap import EnetError, Tap
from vbusfs.model import VbusError

MAC = b"\x02\x00\x00\x00\x00\x01"


def refuse(code: int) -> Callable[..., object]:
    def step(*args: object, **kwargs: object) -> object:
        raise OSError(code, os.strerror(code))

    return step


class Pipes:
    """Read ends handed out as if /dev/net/tun descriptors; `closed(fd)` tells."""

    def __init__(self) -> None:
        self.writers: dict[int, int] = {}

    def new(self) -> int:
        r, w = os.pipe()
        self.writers[r] = w
        return r

    def closed(self, fd: int) -> bool:
        try:
            os.write(self.writers[fd], b"x")
        except BrokenPipeError:
            return True
        return False

    def close(self) -> None:
        for r, w in self.writers.items():
            if not self.closed(r):  # still ours: its number was not handed on
                os.close(r)
            os.close(w)


@pytest.fixture
def pipes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipes]:
    p = Pipes()
    monkeypatch.setattr(_tun, "open_tun", p.new)
    monkeypatch.setattr(_tun, "set_carrier", lambda fd, up: None)
    monkeypatch.setattr(_tun, "set_hardware_address", lambda name, mac: None)
    monkeypatch.setattr(_tun, "configure", lambda name, *, mac, mtu: None)
    monkeypatch.setattr(_tun, "set_persist", lambda fd, persist: None)
    monkeypatch.setattr(_tun, "attach", lambda fd, name, offloads: name.replace("%d", "0"))
    try:
        yield p
    finally:
        p.close()


# --- the enet driver's Tap.open ---


def test_enet_without_dev_net_tun_says_modprobe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tun, "open_tun", refuse(errno.ENOENT))
    with pytest.raises(EnetError) as caught:
        Tap.open("ve%d", mac=MAC, mtu=1500)
    assert caught.value.errno == errno.ENOENT
    assert "cannot open /dev/net/tun" in str(caught.value)
    assert "modprobe tun" in str(caught.value)


def test_enet_attach_refused_asks_for_cap_net_admin_and_closes(
    pipes: Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tun, "attach", refuse(errno.EPERM))
    with pytest.raises(EnetError) as caught:
        Tap.open("ve%d", mac=MAC, mtu=1500)
    assert caught.value.errno == errno.EPERM
    assert "needs CAP_NET_ADMIN" in str(caught.value)
    assert "run vbusfs enet as root" in str(caught.value)
    [fd] = pipes.writers
    assert pipes.closed(fd)


def test_enet_configure_busy_names_the_interface_and_closes(
    pipes: Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tun, "configure", refuse(errno.EBUSY))
    with pytest.raises(EnetError) as caught:
        Tap.open("ve7", mac=MAC, mtu=1500)
    assert caught.value.errno == errno.EBUSY
    assert "cannot create ve7: an interface of that name exists and is in use" in str(caught.value)
    [fd] = pipes.writers
    assert pipes.closed(fd)


def test_enet_name_of_an_interface_that_is_no_tap_says_so(
    pipes: Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tun, "attach", refuse(errno.EINVAL))  # what TUNSETIFF says for lo
    with pytest.raises(EnetError) as caught:
        Tap.open("lo", mac=MAC, mtu=1500)
    assert caught.value.errno == errno.EINVAL
    assert "cannot create lo: an interface of that name exists and is no TAP" in str(caught.value)
    [fd] = pipes.writers
    assert pipes.closed(fd)


def test_enet_other_failure_keeps_the_host_errno(
    pipes: Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tun, "configure", refuse(errno.ENOENT))
    with pytest.raises(EnetError) as caught:
        Tap.open("ve7", mac=MAC, mtu=1500)
    assert caught.value.errno == errno.ENOENT
    assert "cannot create the TAP interface ve7" in str(caught.value)
    [fd] = pipes.writers
    assert pipes.closed(fd)


def test_enet_open_that_works_keeps_its_descriptor(pipes: Pipes) -> None:
    tap = Tap.open("ve%d", mac=MAC, mtu=1500)
    assert tap.name == "ve0"
    assert not pipes.closed(tap.fd)
    tap.close()
    assert tap.fd == -1


# --- the venet-tap deviceclass's TapInterface ---


@pytest.mark.parametrize("code", [errno.ENOENT, errno.EPERM])
def test_venet_tap_without_dev_net_tun(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    monkeypatch.setattr(_tun, "open_tun", refuse(code))
    with pytest.raises(VbusError) as caught:
        TapInterface.open(MAC)
    assert caught.value.errno == code
    assert "cannot open /dev/net/tun" in str(caught.value)


@pytest.mark.parametrize(
    ("step", "code", "wording"),
    [
        ("attach", errno.EPERM, "needs CAP_NET_ADMIN"),
        ("attach", errno.EBUSY, "cannot create a TAP interface (vbus%d)"),
        ("set_hardware_address", errno.EBUSY, "cannot create a TAP interface (vbus%d)"),
    ],
)
def test_venet_tap_creation_refused(
    pipes: Pipes, monkeypatch: pytest.MonkeyPatch, step: str, code: int, wording: str
) -> None:
    monkeypatch.setattr(_tun, step, refuse(code))
    with pytest.raises(VbusError) as caught:
        TapInterface.open(MAC)
    assert caught.value.errno == code
    assert wording in str(caught.value)
    [fd] = pipes.writers
    assert pipes.closed(fd)


def test_set_offloads_without_a_new_descriptor_changes_nothing(
    pipes: Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = TapInterface(pipes.new(), "vbust0", None)
    old = tap.fd
    monkeypatch.setattr(_tun, "open_tun", refuse(errno.EMFILE))
    with pytest.raises(VbusError) as caught:
        tap.set_offloads(0x11)
    assert caught.value.errno == errno.EMFILE
    assert (tap.fd, tap.offloads) == (old, None)
    assert not pipes.closed(old)


def test_set_offloads_not_made_persistent_keeps_the_old_descriptor(
    pipes: Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = TapInterface(pipes.new(), "vbust0", None)
    old = tap.fd
    monkeypatch.setattr(_tun, "set_persist", refuse(errno.EPERM))
    with pytest.raises(VbusError) as caught:
        tap.set_offloads(0x11)
    assert caught.value.errno == errno.EPERM
    assert "cannot re-attach vbust0" in str(caught.value)
    assert (tap.fd, tap.offloads) == (old, None)
    assert not pipes.closed(old)
    [new] = [fd for fd in pipes.writers if fd != old]
    assert pipes.closed(new)


def test_set_offloads_refused_goes_back_to_the_old_mode(
    pipes: Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = TapInterface(pipes.new(), "vbust0", None)
    old = tap.fd
    attached: list[int | None] = []
    persist: list[tuple[int, bool]] = []

    def attach(fd: int, name: str, offloads: int | None) -> str:
        attached.append(offloads)
        if offloads is not None:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return name

    monkeypatch.setattr(_tun, "attach", attach)
    monkeypatch.setattr(_tun, "set_persist", lambda fd, on: persist.append((fd, on)))
    with pytest.raises(VbusError) as caught:
        tap.set_offloads(0x11)
    assert caught.value.errno == errno.EINVAL
    assert "cannot switch vbust0's header mode" in str(caught.value)
    assert attached == [0x11, None]  # the new mode, then back to the old one
    [new] = [fd for fd in pipes.writers if fd != old]
    assert pipes.closed(old)
    assert (tap.fd, tap.offloads) == (new, None)
    assert not pipes.closed(new)
    assert persist == [(old, True), (new, False)]  # again gone with its descriptor


def test_set_offloads_that_cannot_go_back_loses_the_interface(
    pipes: Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = TapInterface(pipes.new(), "vbust0", None)
    old = tap.fd
    monkeypatch.setattr(_tun, "attach", refuse(errno.EBUSY))
    with pytest.raises(VbusError) as caught:
        tap.set_offloads(0x11)
    assert caught.value.errno == errno.EBUSY
    assert "lost vbust0" in str(caught.value)
    assert tap.fd == -1
    [new] = [fd for fd in pipes.writers if fd != old]
    assert pipes.closed(old)
    assert pipes.closed(new)
