"""Ctrl-C inside fit: the step under way finishes, then KeyboardInterrupt propagates. The network
and optimizer are exactly where an uninterrupted run is after the same number of steps (never
half-updated), `net.history` holds the epochs completed so far, and a loop of fit calls stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from unittest import mock

import numpy as np
import pytest

import backprop as bp

rng = np.random.default_rng(0)
X = rng.normal(size=(32, 3))
Y = (X[:, 0] * X[:, 1] > 0).astype(int)


def make():
    net = bp.Sequential(bp.Dense(3, 8, activation="tanh"), bp.Dropout(0.2), bp.Dense(8, 2), seed=0)
    return net, bp.SGD(net.parameters(), lr=0.1, momentum=0.9)


def train(net, opt, epochs, batch_size=8):
    return bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=epochs,
                  batch_size=batch_size, progress=False)


def state(net, opt) -> list:
    parts = [net.store.data.tobytes(), opt.step_count]
    parts += [(k, np.asarray(v).tobytes()) for layer in net.layers for k, v in sorted(layer.state().items())]
    return parts + [buf.tobytes() for buf in opt.state.values()]


@contextlib.contextmanager
def around_update(net, before=None, after=None):
    """Calls before(k) / after(k) around the k-th optimizer update (k from 1)."""
    backend = net.backend
    real = backend.sgd_step
    count = [0]

    def update(*args, **kwargs):
        count[0] += 1
        if before:
            before(count[0])
        real(*args, **kwargs)
        if after:
            after(count[0])

    with mock.patch.object(backend, "sgd_step", update):
        yield


def sigint_at(step):
    def send(k):
        if k == step:
            os.kill(os.getpid(), signal.SIGINT)  # lands between the momentum and the weight update
    return send


@pytest.mark.parametrize("step", [3, 6])  # 3: inside epoch 1; 6: epoch 2, batch 2
def test_sigint_in_the_middle_of_an_update_finishes_that_step_and_stops(step):
    reference, ref_opt = make()
    snapshot = {}
    with around_update(reference, after=lambda k: k == step and snapshot.update(s=state(reference, ref_opt))):
        train(reference, ref_opt, epochs=3)

    net, opt = make()
    with around_update(net, before=sigint_at(step)), pytest.raises(KeyboardInterrupt):
        train(net, opt, epochs=3)
    assert state(net, opt) == snapshot["s"]
    assert net.history.interrupted and net.history.epochs == step // 4  # 4 steps per epoch
    assert not net.training


def test_a_real_sigint_from_a_timer_leaves_the_last_completed_step():
    net, opt = make()
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            train(net, opt, epochs=20000, batch_size=len(X))  # one step per epoch; ~2 s in all
    finally:
        timer.cancel()
    steps = opt.step_count
    assert steps > 0 and net.history.epochs == steps and net.history.interrupted

    again, opt2 = make()
    history = train(again, opt2, epochs=steps, batch_size=len(X))
    assert state(net, opt) == state(again, opt2)
    assert net.history["loss"] == history["loss"]


def test_a_loop_of_fit_calls_can_be_stopped():
    net, opt = make()
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    deadline = time.monotonic() + 10
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            while time.monotonic() < deadline:
                train(net, opt, epochs=1)
    finally:
        timer.cancel()
    assert time.monotonic() < deadline, "fit swallowed Ctrl-C: the loop ran to its deadline"


def test_an_interrupt_raised_between_steps_propagates_and_restores_the_handler():
    # A KeyboardInterrupt raised by code fit calls between steps (here a callback).
    class InterruptAfterFive(bp.Callback):
        calls = 0

        def on_batch_end(self):
            self.calls += 1
            if self.calls == 5:
                raise KeyboardInterrupt

    handler = signal.getsignal(signal.SIGINT)
    net, opt = make()
    with pytest.raises(KeyboardInterrupt):
        bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=3, batch_size=8, progress=False,
               callbacks=[InterruptAfterFive()])
    assert opt.step_count == 5 and net.history.epochs == 1 and not net.training
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_process_that_ignores_sigint_keeps_ignoring_it():
    """Pool workers run with SIGINT ignored; fit must neither turn Ctrl-C back on during
    training nor leave its own handler behind."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        seen = []

        class Probe(bp.Callback):
            def on_batch_end(self):
                seen.append(signal.getsignal(signal.SIGINT))

        net, opt = make()
        bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=1, batch_size=8, progress=False,
               callbacks=[Probe()])
        assert seen and all(handler is signal.SIG_IGN for handler in seen)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
