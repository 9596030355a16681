"""The fork server ends quietly when the daemon goes while it forks a worker."""

from __future__ import annotations

import socket
import subprocess
import sys

from vbusfs.device._control import send


def test_a_daemon_gone_before_the_spawn_reply_ends_the_fork_server_quietly():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = subprocess.Popen(
        [sys.executable, "-m", "vbusfs.device._forkserver", str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stderr=subprocess.PIPE,
        text=True,
    )
    theirs.close()
    worker_end, for_worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        # a spawn request, then the daemon is gone before the server can answer it
        send(ours, {"op": "spawn", "id": 1}, b"", [for_worker.fileno()])
        ours.shutdown(socket.SHUT_RDWR)
        ours.close()
        for_worker.close()
        server.wait(timeout=30)
        worker_end.close()  # the worker it forked, waiting for a recipe, goes (EOF)
        assert server.stderr is not None
        stderr = server.stderr.read()  # to its end: once the worker has gone too
        assert server.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        worker_end.close()
        if server.stderr is not None:
            server.stderr.close()
