"""The extension's machinery: the GIL is released while Rust computes, Ctrl-C stops a long
run within about a second with KeyboardInterrupt, a Rust panic becomes a RuntimeError."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import hypergrad as hg
from hypergrad import _native


@pytest.fixture(autouse=True)
def sigint_raises_keyboard_interrupt():
    """Python's own Ctrl-C handler for each test, restored afterwards. A suite started as a
    background job of a non-interactive shell (as CI scripts often run it) inherits SIGINT
    ignored, and Python then installs no handler: the SIGINTs below would be dropped and the
    "long run" would never end."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_after(seconds):
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_gil_is_released():
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    try:
        _native._spin(0.5)
    finally:
        stop.set()
        t.join()
    assert len(ticks) > 50  # the counter ran while Rust spun


def test_ctrl_c_stops_spin():
    _interrupt_after(0.3)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        _native._spin(30.0)
    assert time.perf_counter() - start < 1.5


def test_ctrl_c_stops_a_long_run(digits):
    x, y, xv, yv = digits[:4]
    _interrupt_after(1.0)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        hg.run("softmax", x, y, xv, yv, outer_steps=1_000_000, standardize=True, device="cpu")
    elapsed = time.perf_counter() - start
    assert elapsed < 2.5, elapsed
    # the interpreter and the library are fine afterwards
    assert hg.run("softmax", x, y, xv, yv, outer_steps=1, standardize=True)["theta"].shape == (1,)


def test_ctrl_c_stops_an_l1_search(sparse_regression):
    x, y, xv, yv = sparse_regression
    _interrupt_after(0.5)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        hg.run("wlasso", x, y, xv, yv, outer_opt="adam", outer_steps=10_000_000)
    assert time.perf_counter() - start < 2.0


def test_panic_becomes_runtime_error():
    with pytest.raises(RuntimeError, match="internal error.*test panic"):
        _native._spin(0.0, True)
    assert _native._spin(0.01) >= 0.01


def test_threads_can_call_concurrently(diabetes):
    x, y, xv, yv = diabetes
    ref = hg.hypergradient("ridge", x, y, xv, yv, theta=0.3)["hypergradient"]
    out = [None] * 4

    def work(i):
        out[i] = hg.hypergradient("ridge", x, y, xv, yv, theta=0.3)["hypergradient"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for h in out:
        np.testing.assert_allclose(h, ref, rtol=1e-12)
