"""Labels out of range are shown as the caller gave them, by every call that takes labels: not
as the int64 a cast would make of them (1e20 is not -9223372036854775808, 2**64-1 is not -1)."""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp

X = np.random.default_rng(0).normal(size=(4, 3))
LABELS = {
    "1e20": (np.array([0.0, 1.0, 1e20, 0.0]), "got 1e+20"),
    "2**64-1": (np.array([0, 1, 2**64 - 1, 0], dtype=np.uint64), "got 18446744073709551615"),
    "-2**63": (np.array([0, 1, -(2**63), 0], dtype=np.int64), "got -9223372036854775808"),
}


def net_and_optimizer():
    net = bp.Sequential(bp.Dense(3, 2), seed=0)
    return net, bp.SGD(net.parameters(), lr=0.1)


CALLS = {
    "fit": lambda net, opt, y: bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=1, progress=False),
    "evaluate": lambda net, opt, y: bp.evaluate(net, X, y, loss=bp.CrossEntropyLoss()),
    "loss": lambda net, opt, y: bp.CrossEntropyLoss()(net(X), y),
    "gradcheck": lambda net, opt, y: bp.gradcheck(net, bp.CrossEntropyLoss(), X, y),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("labels", sorted(LABELS))
def test_labels_out_of_range_are_shown_as_given(call, labels):
    y, shown = LABELS[labels]
    net, opt = net_and_optimizer()
    before = net.store.data.copy()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\] for 2 classes, " + shown.replace("+", r"\+")):
        CALLS[call](net, opt, y)
    assert (net.store.data == before).all()
