"""`make test` runs the whole suite (nbval's smoke chain and the predict CLI included) with no network."""

import os
import socket
import time

import pytest


@pytest.mark.skipif(
    os.environ.get("FER_OFFLINE_SANDBOX") != "1",
    reason="not inside scripts/offline.sh's network namespace (run through `make test`)",
)
def test_suite_runs_without_network():
    t0 = time.time()
    with pytest.raises(OSError):
        socket.create_connection(("1.1.1.1", 443), timeout=5)
    assert time.time() - t0 < 1.0, "an outside connection should fail at once, not time out"
    # loopback still works: Jupyter kernels talk to nbval/papermill over it
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    socket.create_connection(srv.getsockname(), timeout=2).close()
    srv.close()


def test_no_network_fixture_blocks_outside_addresses(no_network):
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("8.8.8.8", 53), timeout=2)


def test_mtcnn_loads_from_the_wheel_without_network(no_network):
    from fer_lib.faces import FaceDetector

    assert FaceDetector(min_face_size=40).mtcnn is not None
