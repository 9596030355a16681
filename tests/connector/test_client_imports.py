"""What a member process pays for `import vbusfs.client`: the client, not the daemon."""

from __future__ import annotations

import json
import subprocess
import sys

NOT_LOADED = [
    "trio",
    "pyfuse3",
    "vbusfs.connector._server",
    "vbusfs.connector._session",
    "vbusfs.classes",
    "vbusfs.daemon",
    "vbusfs.fuse",
    "vbusfs.model",
    "vbusfs.views",
]


def loaded_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_importing_the_client_loads_no_trio_fuse_server_classes_or_model():
    loaded = loaded_after(
        "import vbusfs.client\n"
        "from vbusfs.client import Client, OpenInterface, Venet, connect, connect_async"
    )
    assert "vbusfs.client" in loaded
    assert {m for m in loaded if m in NOT_LOADED or m.startswith("trio.")} == set()


def test_the_trio_face_loads_trio_on_use_and_still_no_daemon():
    loaded = loaded_after("from vbusfs.client import AsyncClient")
    assert "trio" in loaded and "vbusfs.client._trio" in loaded
    assert {m for m in loaded if m in NOT_LOADED and m != "trio"} == set()


def test_the_daemon_side_is_still_reachable_from_the_connector_package():
    loaded = loaded_after("from vbusfs.connector import ClientFault, Connector")
    assert "vbusfs.connector._server" in loaded
