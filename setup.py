"""Build hook: compiles the IOQ ring (native/) into vbusfs._ioq_cffi.

The module is built in cffi's API mode against the stable ABI (Py_LIMITED_API), so one
wheel, tagged cp311-abi3, serves CPython 3.11 and every later version.
"""

from setuptools import setup

setup(
    cffi_modules=["native/build_ioq.py:ffibuilder"],
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
