"""cffi build script: compiles native/*.c into the private module vbusfs._ioq_cffi.

Out-of-line, API mode: the compiler checks every declaration in ioq.h
against the C code (struct layouts included), so the Python side can never
disagree with the C side about the ABI.  Run by setuptools through
``cffi_modules`` in setup.py; it must never be imported by the package.
"""

from pathlib import Path

from cffi import FFI

NATIVE = Path(__file__).resolve().parent


def make_builder(native_dir: str) -> FFI:
    """An FFI builder whose sources are named relative to native_dir."""
    builder = FFI()
    builder.cdef(
        "".join((NATIVE / name).read_text() for name in ("ioq.h", "enet.h", "vtap.h", "blk.h"))
    )
    builder.set_source(
        "vbusfs._ioq_cffi",
        # the module sees the public header only, never the handle's fields
        '#include "ioq_abi.h"\n#include "enet.h"\n#include "vtap.h"\n#include "blk.h"\n',
        sources=[
            f"{native_dir}/{name}"
            for name in (
                "ioq.c",
                "poller.c",
                "shm_signal.c",
                "vswitch.c",
                "gso.c",
                "vswitch_run.c",
                "vtap_run.c",
                "venet.c",
                "enet.c",
                "blk.c",
            )
        ],
        include_dirs=[native_dir],
        extra_compile_args=["-std=gnu11"],
        depends=[f"{native_dir}/{p.name}" for p in sorted(NATIVE.glob("*.[ch]"))],
    )
    return builder


# setuptools runs this from the project root and wants relative sources.
ffibuilder = make_builder("native")

if __name__ == "__main__":
    # a standalone build chdirs into tmpdir, so it needs absolute paths
    make_builder(str(NATIVE)).compile(tmpdir=str(NATIVE.parent / "build" / "cffi"), verbose=True)
