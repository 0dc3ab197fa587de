"""Networks, optimizers and schedules pickle and deep-copy (scikit-learn's clone and
multiprocessing rely on it): a copy trains on bit for bit as the original would, the three keep
pointing at each other, and a network pickled on a GPU lands on the CPU, with one warning,
where no GPU is usable."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

import backprop as bp
from backprop.backends import cuda_status

rng = np.random.default_rng(0)
X = rng.normal(size=(48, 6))
Y = (X[:, 0] - X[:, 2] > 0).astype(int)


def trio(optimizer=bp.Adam):
    """A network with every kind of state (parameters, BatchNorm statistics, a Dropout counter),
    its optimizer and a schedule, after two epochs."""
    net = bp.Sequential(bp.Dense(6, 10, activation="relu"), bp.BatchNorm(10), bp.Dropout(0.2), bp.Dense(10, 2),
                        seed=5)
    opt = optimizer(net.parameters(), lr=0.05)
    sched = bp.StepLR(opt, step_size=1, gamma=0.7)
    train(net, opt, sched)
    return net, opt, sched


def train(net, opt, sched, epochs=2):
    return bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), optimizer=opt, scheduler=sched, epochs=epochs, batch_size=8,
                  progress=False)


def everything(net, opt, sched) -> list:
    """What decides every later step, as comparable values."""
    layers = [(k, np.asarray(v).tobytes()) for layer in net.layers for k, v in sorted(layer.state().items())]
    moments = [(name, bp.to_numpy(buf).tobytes()) for name, buf in sorted(opt.state.items())]
    return [net.store.data.tobytes(), layers, net.epochs_trained, net.training, opt.step_count, moments, opt.lr,
            sched.epoch, sched.base_lr]


COPIES = {"pickle": lambda obj: pickle.loads(pickle.dumps(obj)), "deepcopy": copy.deepcopy}


@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("optimizer", [bp.SGD, bp.Adam, bp.AdamW], ids=lambda cls: cls.__name__)
def test_a_copied_network_optimizer_and_schedule_train_on_bit_for_bit(how, optimizer):
    original = trio(optimizer)
    clone = COPIES[how](original)
    net, opt, sched = clone
    assert opt.store is net.store and sched.optimizer is opt  # still one network, optimizer and schedule
    assert net is not original[0] and net.store.data is not original[0].store.data
    assert everything(*clone) == everything(*original)
    first, second = train(*original), train(*clone)
    assert first["loss"] == second["loss"]
    assert everything(*clone) == everything(*original)


def test_a_copy_is_independent_of_the_original():
    net, opt, sched = trio()
    clone = copy.deepcopy((net, opt, sched))
    before = everything(*clone)
    train(net, opt, sched)
    assert everything(*clone) == before


def pickled_on_a_gpu(monkeypatch, obj) -> bytes:
    """The pickle a GPU network (and what refers to it) would give: the record's device is the
    only thing that differs, so the network reports cuda:0 while it is pickled."""
    with monkeypatch.context() as patch:
        patch.setattr(bp.Sequential, "device", property(lambda self: "cuda:0"))
        return pickle.dumps(obj)


@pytest.mark.skipif(cuda_status()[0] > 0, reason="a GPU is usable here: the network would land on it")
def test_a_network_pickled_on_a_gpu_lands_on_the_cpu_with_one_warning(monkeypatch):
    original = trio()
    data = pickled_on_a_gpu(monkeypatch, original)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clone = pickle.loads(data)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert caught[0].category is RuntimeWarning
    assert "the network was on cuda:0, which is not usable here" in messages[0] and "it is on the CPU" in messages[0]
    net, opt, sched = clone
    assert net.device == "cpu" and opt.store is net.store and sched.optimizer is opt
    assert everything(*clone) == everything(*original)
    assert train(*clone)["loss"] == train(*original)["loss"]

