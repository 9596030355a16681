"""Build hook: compiles the IOQ ring (native/) into vbusfs._ioq_cffi."""

from setuptools import setup

setup(cffi_modules=["native/build_ioq.py:ffibuilder"])
