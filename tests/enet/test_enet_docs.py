"""The `vbusfs enet` shell snippets of README.md and docs/enet.md run as written.

Each snippet is run by bash in a network namespace of the test's, on the test's mount
(for `/tmp/vbus`), with a peer driver at 10.0.0.2 on a second bus of the same switch;
only `ping` is bounded (`-c 1`) and the snippet's driver is ended after it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys

import pytest
from enet_net import Net, in_ns, ns_run, switched

from vbusfs.testing import LiveMount

pytestmark = [pytest.mark.mount, pytest.mark.root]

ROOT = pathlib.Path(__file__).parents[2]


def enet_snippet(doc: str) -> str:
    text = (ROOT / doc).read_text()
    blocks = [part.split("```", 1)[0] for part in text.split("```sh\n")[1:]]
    (block,) = [b for b in blocks if "vbusfs enet --mount /tmp/vbus" in b]
    return block


@pytest.mark.parametrize("doc", ["README.md", "docs/enet.md"])
def test_the_docs_enet_snippet_runs_as_written(mnt: LiveMount, net: Net, doc: str):
    switched(mnt, "lan", "peer")
    here, there = net.netns("lan"), net.netns("peer")
    peer = net.start(mnt, "peer", there)
    assert ns_run(there, "ip", "addr", "add", "10.0.0.2/24", "dev", peer.ifname).returncode == 0
    snippet = enet_snippet(doc).replace("/tmp/vbus", mnt.path)
    assert "ping 10.0.0.2" in snippet
    script = snippet.replace("ping 10.0.0.2", "ping -c 1 -W 5 10.0.0.2")
    # a failing step ends the script and, through the trap, the snippet's driver
    script = f"set -e\ntrap 'kill %1 2>/dev/null || true' EXIT\n{script}\nkill %1\nwait %1\n"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [*in_ns(here), "bash", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # the snippet's driver is in this group, ended below
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == 0, out + err
    assert "1 received" in out, out + err
    assert "vbusfs enet: venet0 is interface 0 of bus lan" in out, out + err
    assert "venet0" not in ns_run(here, "ip", "-o", "link").stdout
