"""The binding layer: the typed stub agrees with the compiled module, only _binding
imports it, its ABI check refuses another number, and its error table is complete."""

from __future__ import annotations

import ast
import errno
import re
from pathlib import Path

import pytest

import vbusfs
from vbusfs.ioq import IoqError, _binding
from vbusfs.ioq._binding import ABI_VERSION, ERRORS, check, ffi, lib

PACKAGE = Path(vbusfs.__file__).parent
ROOT = PACKAGE.parent
STUB = PACKAGE / "_ioq_cffi.pyi"


def stub_lib() -> dict[str, ast.AST]:
    """The members of the stub's _Lib class, by name."""
    tree = ast.parse(STUB.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "_Lib")
    members: dict[str, ast.AST] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            members[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            members[node.target.id] = node
    return members


def compiled_functions() -> set[str]:
    return {n for n in dir(lib) if not n.startswith("_") and callable(getattr(lib, n))}


def compiled_constants() -> set[str]:
    return {n for n in dir(lib) if isinstance(getattr(lib, n), int)}


def test_stub_declares_every_function_of_the_compiled_lib_and_no_other() -> None:
    declared = {n for n, node in stub_lib().items() if isinstance(node, ast.FunctionDef)}
    assert declared == compiled_functions()


def test_stub_declares_every_constant_of_the_compiled_lib_and_no_other() -> None:
    declared = {n for n, node in stub_lib().items() if isinstance(node, ast.AnnAssign)}
    assert declared == compiled_constants()


def test_stub_signatures_match_the_compiled_functions() -> None:
    for name, node in stub_lib().items():
        if not isinstance(node, ast.FunctionDef):
            continue
        params = node.args.posonlyargs + node.args.args
        assert params[0].arg == "self", name
        declared = [ast.unparse(p.annotation) if p.annotation else "" for p in params[1:]]
        ctype = ffi.typeof(getattr(lib, name))  # type: ignore[attr-defined]
        assert len(declared) == len(ctype.args), f"{name}: {declared} vs {ctype}"
        for annotation, arg in zip(declared, ctype.args, strict=True):
            # C integers are Python ints, pointers never are
            assert (annotation == "int") == (arg.kind == "primitive"), f"{name}: {ctype}"
        returns = ast.unparse(node.returns) if node.returns else ""
        assert returns == ("None" if ctype.result.cname == "void" else "int"), name


def test_only_the_binding_imports_the_compiled_module() -> None:
    importers = set()
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n.endswith("_ioq_cffi") or "._ioq_cffi" in n for n in names):
                importers.add(source.relative_to(PACKAGE).as_posix())
            if isinstance(node, ast.Constant) and node.value == "vbusfs._ioq_cffi":
                importers.add(source.relative_to(PACKAGE).as_posix())
    assert importers == {"ioq/_binding.py"}


def test_abi_check_refuses_another_number_naming_both() -> None:
    _binding.check_abi(ABI_VERSION)
    with pytest.raises(ImportError) as info:
        _binding.check_abi(ABI_VERSION + 1)
    assert str(ABI_VERSION) in str(info.value) and str(ABI_VERSION + 1) in str(info.value)


def test_abi_number_is_the_headers() -> None:
    header = (ROOT / "native" / "ioq.h").read_text()
    found = re.search(r"^#define IOQ_ABI_VERSION (\d+)$", header, re.M)
    assert found and int(found.group(1)) == ABI_VERSION == lib.IOQ_ABI_VERSION
    assert lib.ioq_abi_version() == ABI_VERSION


def test_error_table_turns_every_ioq_status_into_an_oserror_with_an_errno() -> None:
    statuses = {getattr(lib, n) for n in compiled_constants() if n.startswith("IOQ_E_")}
    assert statuses == set(ERRORS)
    for rc in statuses:
        with pytest.raises(OSError) as info:
            check(rc)
        assert info.value.errno and info.value.errno > 0
        assert isinstance(info.value, IoqError | TimeoutError)
    with pytest.raises(OSError) as kernel:
        check(-errno.ENOENT)
    assert kernel.value.errno == errno.ENOENT and not isinstance(kernel.value, IoqError)
    assert check(0) == 0 and check(7) == 7


def test_no_ioq_module_is_over_500_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "ioq").glob("*.py")}
    assert max(sizes.values()) <= 500, sizes
