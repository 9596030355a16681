"""The testing kit's own tests: throwaway pytest projects with pytester, and the test
deviceclasses of `plugins/kit_devices.py` (importable here, and by a daemon given
`PLUGINS` on its PYTHONPATH)."""

import pathlib
import sys

pytest_plugins = ["pytester"]

PLUGINS = str(pathlib.Path(__file__).parent / "plugins")
if PLUGINS not in sys.path:
    sys.path.insert(0, PLUGINS)
