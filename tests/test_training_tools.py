"""What fit offers beside its step: callbacks (early stopping, checkpoints of the best epoch, a
CSV log), ReduceLROnPlateau, gradient clipping and sample weights; against PyTorch's algorithms
where PyTorch defines them (skipped without torch)."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest

import backprop as bp


def _data(n=120, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features))
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)


def _net(seed=0, dtype="float64"):
    return bp.Sequential(bp.Dense(5, 16, activation="tanh"), bp.Dense(16, 3), dtype=dtype, seed=seed)


def _overfitting_fit(net, opt, callbacks=(), **kwargs):
    """Few training rows, a large lr: the validation loss turns up within a few epochs."""
    X, y = _data(40)
    X_val, y_val = _data(200, seed=1)
    return bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=kwargs.pop("epochs", 25),
                  batch_size=8, validation_data=(X_val, y_val), progress=False, callbacks=list(callbacks), **kwargs)


# ---------------------------------------------------------------------- callbacks


def test_a_callback_reaches_the_network_optimizer_and_history_it_trains():
    seen = []

    class Halve(bp.Callback):
        def on_epoch_begin(self, epoch):
            seen.append(("begin", epoch, self.history.epochs))

        def on_epoch_end(self, epoch, metrics):
            self.optimizer.lr /= 2
            seen.append(("end", epoch, self.net.epochs_trained, self.is_root))

    net = _net()
    opt = bp.SGD(net.parameters(), lr=0.4)
    X, y = _data()
    bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=3, progress=False, callbacks=[Halve()])
    assert opt.lr == pytest.approx(0.05)
    assert seen == [("begin", 1, 0), ("end", 1, 1, True), ("begin", 2, 1), ("end", 2, 2, True),
                    ("begin", 3, 2), ("end", 3, 3, True)]


def test_early_stopping_stops_after_patience_epochs_and_restores_the_best_epoch():
    net = _net()
    stopper = bp.EarlyStopping(patience=3)
    history = _overfitting_fit(net, bp.SGD(net.parameters(), lr=0.5), [stopper])
    val = history["val_loss"]
    best = int(np.argmin(val)) + 1
    assert history.stopped_early and history.best_epoch == best and history.epochs == best + 3
    X_val, y_val = _data(200, seed=1)
    assert bp.evaluate(net, X_val, y_val, bp.CrossEntropyLoss())["loss"] == pytest.approx(val[best - 1], rel=1e-12)


def test_fits_early_stopping_argument_is_the_callback():
    runs = []
    for callbacks, kwargs in (([bp.EarlyStopping(patience=2)], {}), ([], {"early_stopping": 2})):
        net = _net()
        history = _overfitting_fit(net, bp.SGD(net.parameters(), lr=0.5), callbacks, **kwargs)
        runs.append((history.to_dict(), bp.to_numpy(net.store.data)))
    assert runs[0][0] == runs[1][0] and runs[0][0]["stopped_early"]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_early_stopping_min_delta_and_monitor():
    stopper = bp.EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)  # no improvement is that large
    net = _net()
    history = _overfitting_fit(net, bp.SGD(net.parameters(), lr=0.1), [stopper])
    assert history.epochs == 2 and history.best_epoch == 1
    net = _net()
    with pytest.raises(ValueError, match="EarlyStopping monitors 'val_f2', which this fit does not record; it "
                                         "records loss, accuracy, val_loss, val_accuracy"):
        _overfitting_fit(net, bp.SGD(net.parameters(), lr=0.1), [bp.EarlyStopping(monitor="val_f2")])
    with pytest.raises(ValueError, match="patience must be a non-negative integer, got -1"):
        bp.EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="min_delta must be a finite number >= 0.0, got -1.0"):
        bp.EarlyStopping(min_delta=-1.0)


def test_early_stopping_without_validation_data_monitors_the_training_loss():
    net = _net()
    X, y = _data()
    history = bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), optimizer=bp.SGD(net.parameters(), lr=3.0),
                     epochs=30, progress=False, callbacks=[bp.EarlyStopping(patience=2)])
    best = int(np.argmin(history["loss"])) + 1
    assert history.best_epoch == best
    assert history.stopped_early == (history.epochs < 30)


def test_model_checkpoint_holds_the_best_epoch_and_is_rewritten_only_when_it_improves(tmp_path):
    path = tmp_path / "best.safetensors"
    files = []

    class Inode(bp.Callback):
        def on_epoch_end(self, epoch, metrics):
            files.append(os.stat(path).st_ino if path.exists() else None)

    net = _net()
    opt = bp.SGD(net.parameters(), lr=0.5, momentum=0.5)
    sched = bp.StepLR(opt, 5)
    # EarlyStopping restores the best epoch at the last one: the network is then the file's
    stopper = bp.EarlyStopping(patience=100)
    history = _overfitting_fit(net, opt, [bp.ModelCheckpoint(path), Inode(), stopper], epochs=12, scheduler=sched)
    val = history["val_loss"]
    improved = [v < min(val[:i], default=math.inf) for i, v in enumerate(val)]
    assert any(not flag for flag in improved)  # the test needs epochs that do not improve
    for i in range(1, len(files)):
        assert (files[i] != files[i - 1]) == improved[i], i
    loaded, loaded_opt, loaded_sched = bp.load(path, optimizer=True, scheduler=True)
    np.testing.assert_array_equal(bp.to_numpy(loaded.store.data), bp.to_numpy(net.store.data))
    assert loaded.epochs_trained == history.best_epoch
    assert loaded_opt.step_count == history.best_epoch * 5 and loaded_sched.epoch == history.best_epoch
    assert not [name for name in os.listdir(tmp_path) if name != "best.safetensors"]  # no temporary left


def test_model_checkpoint_every_epoch_and_refusals(tmp_path):
    net = _net()
    path = tmp_path / "last.safetensors"
    _overfitting_fit(net, bp.SGD(net.parameters(), lr=0.5), [bp.ModelCheckpoint(path, save_best_only=False)],
                     epochs=3)
    assert bp.load(path).epochs_trained == 3
    with pytest.raises(TypeError, match="path must be a file name"):
        bp.ModelCheckpoint(3)
    with pytest.raises(ValueError, match="which is a folder"):
        _overfitting_fit(_net(), None, [bp.ModelCheckpoint(tmp_path)])


def test_csv_logger_writes_the_history_at_full_precision(tmp_path):
    path = tmp_path / "log.csv"
    net = _net()
    history = _overfitting_fit(net, bp.SGD(net.parameters(), lr=0.5), [bp.CSVLogger(path)], epochs=4)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert [int(row[0]) for row in rows[1:]] == [1, 2, 3, 4]
    for column, key in enumerate(rows[0][1:], start=1):
        assert [float(row[column]) for row in rows[1:]] == history[key]  # exactly: repr round-trips


# ---------------------------------------------------------------------- ReduceLROnPlateau


def _plateau_lrs(make, values):
    return [make(value) for value in values]


PLATEAU_SETTINGS = [
    {},
    {"patience": 2, "factor": 0.5},
    {"mode": "max", "patience": 1, "threshold": 0.1},
    {"threshold_mode": "abs", "threshold": 0.05, "patience": 0, "cooldown": 2},
    {"patience": 0, "factor": 0.3, "min_lr": 0.01, "cooldown": 1},
    {"patience": 1, "eps": 0.05, "factor": 0.9},
]


def _sequences():
    rng = np.random.default_rng(0)
    noisy = list(np.cumsum(rng.normal(0.0, 1.0, 60)) * 0.1 + 5.0)
    return [noisy, [1.0] * 30, list(np.linspace(3.0, 1.0, 20)) + [1.0] * 20, [2.0, math.nan, 1.0, 1.0, 1.5, 0.5] * 5]


@pytest.mark.parametrize("settings", PLATEAU_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_reduce_lr_on_plateau_is_pytorchs(settings):
    torch = pytest.importorskip("torch")
    for values in _sequences():
        net = _net()
        opt = bp.SGD(net.parameters(), lr=1.0)
        ours = bp.ReduceLROnPlateau(opt, **settings)
        param = torch.nn.Parameter(torch.zeros(1))
        torch_opt = torch.optim.SGD([param], lr=1.0)
        theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, **settings)
        for value in values:
            ours.step(value)
            theirs.step(value)
            assert opt.lr == torch_opt.param_groups[0]["lr"]
            assert (ours.num_bad_epochs, ours.cooldown_counter) == (theirs.num_bad_epochs, theirs.cooldown_counter)


def test_reduce_lr_on_plateau_defaults_and_refusals():
    net = _net()
    opt = bp.SGD(net.parameters(), lr=1.0)
    sched = bp.ReduceLROnPlateau(opt)
    assert sched.hyperparameters() == {"mode": "min", "factor": 0.1, "patience": 10, "threshold": 1e-4,
                                       "threshold_mode": "rel", "cooldown": 0, "min_lr": 0.0, "eps": 1e-8}
    for value in [1.0] * 11:  # the first sets best, then 10 epochs without improvement
        sched.step(value)
    assert opt.lr == 1.0
    sched.step(1.0)  # the 11th: more than patience
    assert opt.lr == pytest.approx(0.1)
    with pytest.raises(ValueError, match="factor must be in \\[0.0, 1.0\\), got 1.0"):
        bp.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode must be one of \\('min', 'max'\\), got 'up'"):
        bp.ReduceLROnPlateau(opt, mode="up")
    with pytest.raises(TypeError, match="value must be a real number"):
        sched.step("1.0")


def _plateau_run(tmp_path, epochs_before_save):
    """(weights, lr, history) of 8 epochs with ReduceLROnPlateau, saved and loaded after
    `epochs_before_save` epochs (none when 0)."""
    X, y = _data(60)
    X_val, y_val = _data(100, seed=1)
    net = _net()
    opt = bp.SGD(net.parameters(), lr=0.8, momentum=0.5)
    sched = bp.ReduceLROnPlateau(opt, factor=0.5, patience=1, threshold=0.05, cooldown=1)
    kwargs = dict(loss=bp.CrossEntropyLoss(), batch_size=16, validation_data=(X_val, y_val), progress=False)
    losses = []
    if epochs_before_save:
        losses += bp.fit(net, X, y, optimizer=opt, scheduler=sched, epochs=epochs_before_save, **kwargs)["val_loss"]
        path = bp.save(net, tmp_path / "mid.safetensors", optimizer=opt, scheduler=sched)
        net, opt, sched = bp.load(path, optimizer=True, scheduler=True)
    losses += bp.fit(net, X, y, optimizer=opt, scheduler=sched, epochs=8 - epochs_before_save, **kwargs)["val_loss"]
    return bp.to_numpy(net.store.data), opt.lr, losses, sched


def test_fit_steps_the_plateau_schedule_with_the_validation_loss_and_a_resumed_run_goes_on_exactly(tmp_path):
    weights, lr, losses, sched = _plateau_run(tmp_path, 0)
    reference = bp.ReduceLROnPlateau(bp.SGD(_net().parameters(), lr=0.8), factor=0.5, patience=1, threshold=0.05,
                                     cooldown=1)
    for value in losses:
        reference.step(value)
    assert lr == reference.optimizer.lr < 0.8  # the run's lr is the schedule's on its validation losses
    for split in (3, 5):
        resumed = _plateau_run(tmp_path, split)
        np.testing.assert_array_equal(resumed[0], weights)
        assert resumed[1] == lr and resumed[2] == losses
        assert resumed[3].plateau_state() == sched.plateau_state()


def test_the_plateau_record_is_checked_on_load(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    import json

    from backprop.checkpoint import _digest

    net = _net()
    opt = bp.SGD(net.parameters(), lr=0.5)
    path = bp.save(net, tmp_path / "p.safetensors", optimizer=opt, scheduler=bp.ReduceLROnPlateau(opt, cooldown=1))
    with safe_open(path, framework="numpy") as handle:
        metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    for plateau in ({"best": None, "num_bad_epochs": -1, "cooldown_counter": 0},
                    {"best": None, "num_bad_epochs": 0, "cooldown_counter": 2},
                    {"best": "low", "num_bad_epochs": 0, "cooldown_counter": 0},
                    {"best": 1.0, "num_bad_epochs": 0}):
        record = json.loads(metadata["backprop"])
        record["scheduler"]["plateau"] = plateau
        records = json.dumps(record, sort_keys=True)
        bad = tmp_path / "bad.safetensors"
        save_file(tensors, bad, metadata={**metadata, "backprop": records,
                                          "sha256": _digest(records, sorted(tensors), tensors.__getitem__)})
        with pytest.raises(ValueError, match="an invalid scheduler record"):
            bp.load(bad, scheduler=True)


# ---------------------------------------------------------------------- gradient clipping


def test_clip_grad_norm_is_pytorchs_on_the_same_gradients():
    torch = pytest.importorskip("torch")
    for dtype, scale, max_norm in (("float64", 1.0, 0.5), ("float32", 10.0, 1.0), ("float64", 1e-3, 1.0)):
        net = _net(dtype=dtype)
        rng = np.random.default_rng(1)
        for param in net.parameters():
            param.grad[...] = rng.normal(size=param.shape) * scale
        grads = [torch.tensor(bp.to_numpy(p.grad).copy()) for p in net.parameters()]
        tensors = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for t, g in zip(tensors, grads):
            t.grad = g
        expected = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm))
        norm = bp.clip_grad_norm(net, max_norm)
        assert isinstance(norm, float)
        rtol = 1e-6 if dtype == "float32" else 1e-14
        assert norm == pytest.approx(expected, rel=rtol)
        for param, t in zip(net.parameters(), tensors):
            np.testing.assert_allclose(bp.to_numpy(param.grad), t.grad.numpy(), rtol=rtol, atol=0)


def test_clip_grad_norm_without_torch():
    net = _net()
    rng = np.random.default_rng(1)
    net.store.grad[...] = rng.normal(size=net.store.grad.shape)
    before = bp.to_numpy(net.store.grad).copy()
    norm = bp.clip_grad_norm(net, 1.0)
    assert norm == pytest.approx(np.linalg.norm(before), rel=1e-14)
    np.testing.assert_allclose(bp.to_numpy(net.store.grad), before / (norm + 1e-6), rtol=1e-14)
    small = bp.to_numpy(net.store.grad).copy()
    bp.clip_grad_norm(net, 10.0)  # below the bound: untouched
    np.testing.assert_array_equal(bp.to_numpy(net.store.grad), small)
    with pytest.raises(ValueError, match="max_norm must be a finite number > 0.0, got 0.0"):
        bp.clip_grad_norm(net, 0.0)


def test_fit_clip_norm_is_the_public_loop_with_clip_grad_norm():
    X, y = _data(64)
    fitted = _net()
    opt = bp.SGD(fitted.parameters(), lr=0.5, momentum=0.9)
    bp.fit(fitted, X, y, loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=2, batch_size=16, shuffle=False,
           progress=False, clip_norm=0.3)
    looped = _net()
    opt = bp.SGD(looped.parameters(), lr=0.5, momentum=0.9)
    loss = bp.CrossEntropyLoss()
    norms = []
    for _ in range(2):
        for start in range(0, 64, 16):
            loss(looped(X[start:start + 16]), y[start:start + 16])
            looped.backward(loss.backward())
            norms.append(bp.clip_grad_norm(looped, 0.3))
            opt.step()
    assert max(norms) > 0.3  # clipping took place
    np.testing.assert_allclose(bp.to_numpy(fitted.store.data), bp.to_numpy(looped.store.data), rtol=1e-12,
                               atol=1e-14)
    with pytest.raises(ValueError, match="clip_norm must be a finite number > 0.0, got -1.0"):
        bp.fit(fitted, X, y, loss=bp.CrossEntropyLoss(), clip_norm=-1.0)


# ---------------------------------------------------------------------- sample weights


@pytest.mark.parametrize("loss", [bp.MSELoss(), bp.MAELoss(), bp.HuberLoss(0.5), bp.BCEWithLogitsLoss(),
                                  bp.HingeLoss(), bp.CrossEntropyLoss(), bp.BCELoss()],
                         ids=lambda loss: type(loss).__name__)
def test_unit_row_losses_are_the_loss(loss):
    """Each built-in's row losses: their mean is the loss, their gradient over the rows its gradient."""
    from backprop.losses import target_on_device

    rng = np.random.default_rng(0)
    backend = bp.get_backend("cpu", "float64")
    pred = rng.normal(size=(7, 3))
    if isinstance(loss, bp.CrossEntropyLoss):
        target = rng.integers(0, 3, 7)
    elif isinstance(loss, bp.BCELoss):
        pred = 1 / (1 + np.exp(-pred))
        target = rng.integers(0, 2, (7, 3)).astype(float)
    else:
        target = rng.integers(0, 2, (7, 3)).astype(float)
    target = target_on_device(backend, loss.check_target(target, 3))
    value, grad = loss.value_and_grad(backend, pred, target)
    rows, row_grad = loss.row_losses(backend, pred, target)
    assert rows.shape == (7, 1)
    assert float(np.mean(rows)) == pytest.approx(float(value), rel=1e-13)
    np.testing.assert_allclose(row_grad / 7, grad, rtol=1e-13, atol=1e-16)


def test_sample_weights_weigh_each_rows_loss_in_the_batch_mean():
    """One full-batch SGD step on a linear network: the gradient of sum_i w_i l_i / sum_i w_i
    (MSE rows: the mean over the outputs of (p - t)^2), written out with NumPy."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(10, 4)), rng.normal(size=(10, 2))
    w = rng.uniform(0.0, 3.0, 10)
    net = bp.Sequential(bp.Dense(4, 2), dtype="float64", seed=0)
    W0, b0 = bp.to_numpy(net.layers[0].weight.data).copy(), bp.to_numpy(net.layers[0].bias.data).copy()
    history = bp.fit(net, X, Y, loss=bp.MSELoss(), optimizer=bp.SGD(net.parameters(), lr=0.1), epochs=1,
                     batch_size=10, shuffle=False, progress=False, sample_weight=w)
    diff = X @ W0 + b0 - Y
    dz = (w[:, None] * 2 * diff / 2) / w.sum()
    np.testing.assert_allclose(bp.to_numpy(net.layers[0].weight.data), W0 - 0.1 * X.T @ dz, rtol=1e-12)
    np.testing.assert_allclose(bp.to_numpy(net.layers[0].bias.data), b0 - 0.1 * dz.sum(axis=0), rtol=1e-12)
    expected = float(np.sum(w * np.mean(diff**2, axis=1)) / w.sum())
    assert history["loss"][0] == pytest.approx(expected, rel=1e-12)


def test_integer_sample_weights_equal_repeated_rows_in_one_batch():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(12, 5)), rng.integers(0, 3, 12)
    w = rng.integers(0, 4, 12)
    results = []
    for data, kwargs in (((X, y), {"sample_weight": w}), ((np.repeat(X, w, axis=0), np.repeat(y, w)), {})):
        net = _net()
        bp.fit(net, *data, loss=bp.CrossEntropyLoss(), optimizer=bp.SGD(net.parameters(), lr=0.3), epochs=3,
               batch_size=100, progress=False, **kwargs)
        results.append(bp.to_numpy(net.store.data))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12, atol=1e-14)


def test_sample_weight_refusals():
    X, y = _data(20)
    net = _net()
    before = bp.to_numpy(net.store.data).copy()
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(20,\), one weight per sample, got \(3,\)"):
        bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), sample_weight=[1, 2, 3], progress=False)
    with pytest.raises(ValueError, match="sample_weight must be >= 0"):
        bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), sample_weight=-np.ones(20), progress=False)
    with pytest.raises(ValueError, match="reduction='sum'"):
        bp.fit(net, X, y, loss=bp.CrossEntropyLoss(reduction="sum"), sample_weight=np.ones(20), progress=False)

    class Plain(bp.MSELoss):
        row_losses = bp.Loss.row_losses

    with pytest.raises(TypeError, match="need a loss with row_losses\\(\\), which Plain does not define"):
        bp.fit(net, X, np.eye(3)[y], loss=Plain(), sample_weight=np.ones(20), progress=False)
    with pytest.raises(ValueError, match="penalty_scale must be one of \\('batch', 'weight'\\), got 'rows'"):
        bp.fit(net, X, y, loss=bp.CrossEntropyLoss(), penalty_scale="rows", progress=False)
    np.testing.assert_array_equal(bp.to_numpy(net.store.data), before)


def test_the_readme_training_section_runs_as_written(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Training")
    section = readme[start:readme.index("\n## ", start)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    history = namespace["history"]
    assert history["val_accuracy"][history.best_epoch - 1] > 0.85
    assert (tmp_path / "history.csv").exists() and namespace["best"].epochs_trained == history.best_epoch
    assert isinstance(namespace["norm"], float)
