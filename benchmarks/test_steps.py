"""One full training step per benchmark config (bench.CONFIGS), as fit runs it (forward, loss,
backward, the finiteness check, SGD with momentum 0.9), on every available backend. The
comparison with PyTorch lives in `python -m backprop bench`."""

from __future__ import annotations

import pytest

import backprop as bp
from backprop.apps.bench import CONFIGS, make_data, our_network


@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_step(backend, measure, name):
    config = CONFIGS[name]
    config = type(config)(**dict(config.__dict__, steps=1))  # one batch: one fit call is one step
    net, loss = our_network(config, backend.device)
    optimizer = bp.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = make_data(config)
    measure(backend, lambda: bp.fit(net, x, y, loss=loss, optimizer=optimizer, epochs=1,
                                    batch_size=config.batch, shuffle=False, progress=False))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_public_loop_step(backend, measure, name):
    """The step as a PyTorch user writes it through the public API:
    loss = crit(net(x), y); net.backward(crit.backward()); opt.step(), every per-call check included."""
    config = CONFIGS[name]
    net, loss = our_network(config, backend.device)
    optimizer = bp.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = make_data(type(config)(**dict(config.__dict__, steps=1)))

    def step():
        loss(net(x), y)
        net.backward(loss.backward())
        optimizer.step()

    measure(backend, step)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hand_written_step(benchmark, name):
    """The same step written by hand for that one network (backprop/apps/bench_baseline.py): the
    bar fit's step is measured against, on the CPU. test_training_step above times a whole fit
    call of one step (its once-per-call checks included); `python -m backprop bench` compares
    the two per step, with fit's per-call work amortized over 3 epochs."""
    from backprop.apps.bench_baseline import HandwrittenStep

    config = CONFIGS[name]
    step = HandwrittenStep(config.widths, config.activation, config.loss, config.batch)
    x, y = make_data(type(config)(**dict(config.__dict__, steps=1)))
    benchmark(step.step, x, y)
