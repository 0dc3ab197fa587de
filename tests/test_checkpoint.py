"""Checkpoints: a bit-for-bit round trip of everything an exact resume needs (parameters,
optimizer state and step count, dropout step counters, BatchNorm statistics, the epoch count
that keys fit's shuffles); a resumed run equals an uninterrupted one exactly; writes are atomic;
loading never unpickles; damaged, foreign and mismatched files are refused with ValueError;
files of format version 1 (.npz) keep loading.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
from checkpoint_helpers import DATA, OPTIMIZERS, X, Y, make, read, rewrite, rewrite_v1, saved, state, train, v1_copy
from safetensors.numpy import save_file

import backprop as bp

# ---------------------------------------------------------------------- round trip and resume


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_is_bit_for_bit(tmp_path, optimizer, dtype):
    net, opt = make(optimizer, dtype)
    train(net, opt, epochs=2)
    bp.save(net, tmp_path / "m.safetensors", optimizer=opt)
    net2, opt2 = bp.load(tmp_path / "m.safetensors", optimizer=True)
    assert state(net2, opt2) == state(net, opt)
    assert net2.device == "cpu" and not net2.training


def test_resume_matches_an_uninterrupted_run_exactly(tmp_path):
    whole, whole_opt = make()
    history = train(whole, whole_opt, epochs=5)

    first, first_opt = make()
    head = train(first, first_opt, epochs=2)
    bp.save(first, tmp_path / "m.safetensors", optimizer=first_opt)
    del first, first_opt
    resumed, resumed_opt = bp.load(tmp_path / "m.safetensors", optimizer=True)
    tail = train(resumed, resumed_opt, epochs=3)

    assert state(resumed, resumed_opt) == state(whole, whole_opt)
    assert head["loss"] + tail["loss"] == history["loss"]
    assert head["accuracy"] + tail["accuracy"] == history["accuracy"]


SCHEDULES = {
    "step": lambda opt: bp.StepLR(opt, step_size=2, gamma=0.5),
    "exponential": lambda opt: bp.ExponentialLR(opt, gamma=0.7),
    "cosine": lambda opt: bp.CosineAnnealingLR(opt, T_max=4, eta_min=1e-4),
}


def schedule_state(sched) -> list:
    return [type(sched), sched.hyperparameters(), sched.base_lr, sched.epoch, sched.optimizer.lr]


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_a_schedule_resumes_where_it_stopped(tmp_path, schedule):
    """Built again after a load, a schedule would start over from the already decayed lr; saved
    with its optimizer it goes on: the resumed run equals the uninterrupted one, lr included."""
    whole, whole_opt = make()
    whole_sched = SCHEDULES[schedule](whole_opt)
    history = bp.fit(whole, X, Y, loss=bp.CrossEntropyLoss(), optimizer=whole_opt, epochs=5, batch_size=8,
                     scheduler=whole_sched, progress=False)

    first, first_opt = make()
    first_sched = SCHEDULES[schedule](first_opt)
    head = bp.fit(first, X, Y, loss=bp.CrossEntropyLoss(), optimizer=first_opt, epochs=2, batch_size=8,
                  scheduler=first_sched, progress=False)
    bp.save(first, tmp_path / "m.safetensors", optimizer=first_opt, scheduler=first_sched)
    resumed, resumed_opt, resumed_sched = bp.load(tmp_path / "m.safetensors", scheduler=True)
    assert schedule_state(resumed_sched) == schedule_state(first_sched)
    assert resumed_sched.optimizer is resumed_opt
    tail = bp.fit(resumed, X, Y, loss=bp.CrossEntropyLoss(), optimizer=resumed_opt, epochs=3, batch_size=8,
                  scheduler=resumed_sched, progress=False)

    assert state(resumed, resumed_opt) == state(whole, whole_opt)
    assert schedule_state(resumed_sched) == schedule_state(whole_sched)
    assert head["loss"] + tail["loss"] == history["loss"]


def test_a_checkpoint_without_a_schedule_loads_with_none(tmp_path):
    net, opt = make()
    bp.save(net, tmp_path / "m.safetensors", optimizer=opt)
    assert bp.load(tmp_path / "m.safetensors", scheduler=True)[2] is None
    bp.save(net, tmp_path / "bare.safetensors")
    assert bp.load(tmp_path / "bare.safetensors", scheduler=True)[1:] == (None, None)


def test_a_schedule_is_saved_only_with_its_own_optimizer(tmp_path):
    net, opt = make()
    other = bp.Adam(net.parameters())
    path = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="scheduler must be saved with its optimizer"):
        bp.save(net, path, scheduler=bp.StepLR(opt, 2))
    with pytest.raises(ValueError, match="scheduler must be saved with its optimizer"):
        bp.save(net, path, optimizer=other, scheduler=bp.StepLR(opt, 2))
    with pytest.raises(TypeError, match="scheduler must be a backprop schedule .*got str"):
        bp.save(net, path, optimizer=opt, scheduler="cosine")
    assert not path.exists()


def test_a_users_own_optimizer_or_schedule_class_is_refused_by_name_before_writing(tmp_path):
    """A checkpoint rebuilds optimizers and schedules from their class names, so it can hold only
    the library's own; a subclass is a TypeError naming it (it was a bare StopIteration)."""
    from backprop.optim import LRScheduler

    class Halving(LRScheduler):
        def lr_at(self, epoch):
            return self.base_lr / 2**epoch

        def hyperparameters(self):
            return {}

    class MySGD(bp.SGD):
        pass

    net, opt = make()
    path = tmp_path / "m.safetensors"
    with pytest.raises(TypeError, match="scheduler must be one of StepLR, ExponentialLR, CosineAnnealingLR, ReduceLROnPlateau "
                                        "to be saved in a checkpoint, got Halving"):
        bp.save(net, path, optimizer=opt, scheduler=Halving(opt))
    with pytest.raises(TypeError, match="optimizer must be one of SGD, Adam, AdamW to be saved in a checkpoint, "
                                        "got MySGD"):
        bp.save(net, path, optimizer=MySGD(net.parameters()))
    assert not path.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("record, match", [
    ({"type": "cyclic", "hyperparameters": {}, "base_lr": 0.01, "epoch": 1}, "KeyError: 'cyclic'"),
    ({"type": "step", "hyperparameters": {"step_size": 0}, "base_lr": 0.01, "epoch": 1}, "step_size must be"),
    ({"type": "step", "hyperparameters": {"step_size": 2}, "base_lr": "0.01", "epoch": 1}, "base_lr must be a real"),
    ({"type": "step", "hyperparameters": {"step_size": 2}, "base_lr": 0.01, "epoch": -1}, "epoch must be a non-negative"),
    ([1, 2], r"TypeError: the scheduler record is \[1, 2\], not a JSON object"),
], ids=["type", "hyperparameter", "base_lr", "epoch", "not-an-object"])
def test_an_invalid_schedule_record_is_refused(tmp_path, record, match):
    net, opt = make()
    path = pathlib.Path(bp.save(net, tmp_path / "m.safetensors", optimizer=opt, scheduler=bp.StepLR(opt, 2)))
    rewrite(path, record={"scheduler": record})
    with pytest.raises(ValueError, match=f"invalid scheduler record.*{match}"):
        bp.load(path, scheduler=True)
    bp.load(path, optimizer=True)  # the rest of the file is fine: only the schedule is refused


def test_a_network_saved_without_its_optimizer_loads_with_none(tmp_path):
    net, _ = make()
    bp.save(net, tmp_path / "m.safetensors")
    net2, opt2 = bp.load(tmp_path / "m.safetensors", optimizer=True)
    assert opt2 is None and state(net2) == state(net)


@pytest.mark.parametrize("device", bp.available_devices())
def test_a_checkpoint_from_any_device_loads_on_the_cpu(tmp_path, device):
    net, opt = make()
    train(net, opt, epochs=1)
    if device != "cpu":  # a real GPU: train there, so the file comes from device arrays
        net.to(device)
        opt = bp.Adam(net.parameters(), lr=0.01)
        train(net, opt, epochs=1)
        net.to("cpu")
    bp.save(net, tmp_path / "m.safetensors", optimizer=opt if device == "cpu" else None)
    expected = state(net)
    # Where a file was written is recorded but never needed: one from a GPU run loads on the CPU.
    rewrite(tmp_path / "m.safetensors", record={"device": "cuda:3"})
    loaded = bp.load(tmp_path / "m.safetensors")
    assert loaded.device == "cpu" and state(loaded) == expected


# ---------------------------------------------------------------------- atomic writes


def test_a_write_failing_partway_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = saved(tmp_path)
    before = path.read_bytes()
    net, opt = make()
    import safetensors.numpy

    def save_file_then_fail(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)  # the whole file is written to the temporary file...
        with open(filename, "rb+") as handle:  # ...then half of it is lost, as in a crash
            handle.truncate(os.path.getsize(filename) // 2)
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", save_file_then_fail)
    with pytest.raises(OSError, match="No space left"):
        bp.save(net, path, optimizer=opt)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left
    monkeypatch.undo()
    bp.load(path, optimizer=True)


# ---------------------------------------------------------------------- refused files


def test_a_truncated_file_is_refused(tmp_path):
    path = saved(tmp_path)
    data = path.read_bytes()
    for length in (0, 10, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        path.write_bytes(data[:length])
        with pytest.raises(ValueError, match="not a readable backprop checkpoint"):
            bp.load(path, optimizer=True)


def test_no_flipped_byte_is_loaded_silently(tmp_path):
    # A flipped byte (150 positions spread over the file, every region hit: header, records,
    # tensors): the file is refused, or (a flip in bytes nothing reads, such as the header's
    # padding) it loads exactly what was saved. Never a quietly different network.
    path = saved(tmp_path)
    data = path.read_bytes()
    original = bp.load(path, optimizer=True)
    expected = state(*original)
    positions = np.linspace(0, len(data) - 1, 150).astype(int)
    refused = 0
    for position in positions:
        damaged = bytearray(data)
        damaged[position] ^= 0x20
        path.write_bytes(bytes(damaged))
        try:
            loaded = bp.load(path, optimizer=True)
        except ValueError:
            refused += 1
            continue
        assert state(*loaded) == expected, f"flipping byte {position} changed what was loaded"
    assert refused > 0.8 * len(positions)


@pytest.mark.parametrize("craft, match", [
    (lambda p: p.write_text("not a checkpoint"), "not a readable backprop checkpoint"),
    (lambda p: save_file({"w": np.zeros(3)}, str(p)), r"not a backprop checkpoint \(format None\)"),
    (lambda p: rewrite(p, metadata={"format": "keras"}), r"not a backprop checkpoint \(format 'keras'\)"),
    (lambda p: rewrite(p, metadata={"version": "99"}), "has checkpoint format version 99; this backprop reads versions 1 and 2"),
    (lambda p: rewrite(p, record={"epochs_trained": 7}, sign=False), "damaged: its contents do not match the checksum"),
    (lambda p: rewrite(p, tensors={"layers.0.weight": np.zeros((5, 7), dtype=np.float32)}),
     r"tensor 'layers.0.weight' has shape \(5, 7\), but the architecture declares \(5, 8\)"),
    (lambda p: rewrite(p, drop=["layers.3.bias"]), "it has no tensor 'layers.3.bias'"),
    (lambda p: rewrite(p, record={"architecture": {"layers": [{"type": "Dense", "in_features": 5, "out_features": 300}],
                                                   "dtype": "float32", "seed": 3}}),
     r"tensor 'layers.0.weight' has shape \(5, 8\), but the architecture declares \(5, 300\)"),
    (lambda p: rewrite(p, record={"architecture": {"layers": [{"type": "Conv2d"}], "dtype": "float32", "seed": 3}}),
     "layer type 'Conv2d' is not registered in this process"),
    (lambda p: rewrite(p, record={"architecture": {"layers": [{"type": "Dense", "widht": 3}], "dtype": "float32", "seed": 3}}),
     "a layer record is malformed"),
    (lambda p: rewrite(p, record={"architecture": {"layers": [1], "dtype": "float32", "seed": 3}}),
     "a layer record is malformed"),
    (lambda p: rewrite(p, record={"counters": [{}, {}, {}, {}]}), r"layer 1's counters are \{\}, expected \['step'\]"),
    (lambda p: rewrite(p, tensors={"layers.2.running_mean": np.zeros(3, dtype=np.float32)}),
     r"tensor 'layers.2.running_mean' has shape \(3,\), but the architecture declares \(8,\)"),
    (lambda p: rewrite(p, tensors={"layers.3.bias": np.full(2, np.nan, dtype=np.float32)}),
     "tensor 'layers.3.bias' holds non-finite values"),
    (lambda p: rewrite(p, tensors={"optimizer.exp_avg": np.zeros(5, dtype=np.float32)}),
     r"tensor 'optimizer.exp_avg' has shape \(5,\), but the architecture declares"),
    (lambda p: rewrite(p, record={"epochs_trained": -2}), "invalid epochs_trained record .*got -2"),
], ids=["text", "foreign-safetensors", "other-format", "version", "checksum", "parameter-shape", "missing-tensor",
        "architecture-mismatch", "unknown-layer", "bad-layer-config", "layer-not-an-object", "counters",
        "buffer-shape", "non-finite", "optimizer-state", "epochs_trained"])
def test_foreign_and_mismatched_files_are_refused(tmp_path, craft, match):
    path = saved(tmp_path)
    craft(path)
    with pytest.raises(ValueError, match=match):
        bp.load(path, optimizer=True)


class _Marker:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


# ---------------------------------------------------------------------- format version 1 (.npz)


# What tests/data/checkpoint_v1_expected.npz holds was computed on the machine that wrote the
# file. Another CPU's BLAS kernels sum in another order, so its float64 results differ in their
# last bits (an AVX2 machine: 2 of 139 resumed parameters, by 3.6e-16 relative); the stored
# values are matched within this bound, far above such rounding and far below any real change.
# The bit-for-bit promise is between two runs on this machine, computed in the test.
STORED_RTOL, STORED_ATOL = 1e-9, 1e-12


def test_a_version_1_checkpoint_keeps_loading_and_resumes_bit_for_bit(tmp_path):
    """tests/data/checkpoint_v1.npz was written by backprop 0.1.0 (format version 1): a float64
    Dense/BatchNorm/Dropout/GELU network, Adam, a StepLR schedule, after 3 epochs. It loads with
    the outputs it had then, one more epoch trains as it did then (within rounding: see
    STORED_RTOL), and two epochs from it in one run equal one epoch, a save as version 2, a load
    and one more epoch, bit for bit."""
    expected = np.load(DATA / "checkpoint_v1_expected.npz")
    data = dict(loss=bp.CrossEntropyLoss(), epochs=1, batch_size=8, progress=False)
    net, opt, sched = bp.load(v1_copy(tmp_path), optimizer=True, scheduler=True)
    np.testing.assert_allclose(bp.predict(net, expected["probe"]), expected["output"], rtol=STORED_RTOL,
                               atol=STORED_ATOL)
    bp.fit(net, expected["X"], expected["y"], optimizer=opt, scheduler=sched, **data)
    np.testing.assert_allclose(net.store.data, expected["resumed_parameters"], rtol=STORED_RTOL, atol=STORED_ATOL)
    assert opt.lr == expected["resumed_lr"]  # the schedule's arithmetic: no BLAS in it
    bp.save(net, tmp_path / "v2.safetensors", optimizer=opt, scheduler=sched)  # and it saves as version 2
    assert read(tmp_path / "v2.safetensors")[0]["version"] == "2"
    resumed, resumed_opt, resumed_sched = bp.load(tmp_path / "v2.safetensors", optimizer=True, scheduler=True)
    bp.fit(resumed, expected["X"], expected["y"], optimizer=resumed_opt, scheduler=resumed_sched, **data)

    whole, whole_opt, whole_sched = bp.load(v1_copy(tmp_path), optimizer=True, scheduler=True)
    bp.fit(whole, expected["X"], expected["y"], optimizer=whole_opt, scheduler=whole_sched, **{**data, "epochs": 2})
    assert state(resumed, resumed_opt) == state(whole, whole_opt)
    assert (resumed_opt.lr, resumed_sched.epoch) == (whole_opt.lr, whole_sched.epoch)


@pytest.mark.parametrize("craft, match", [
    (lambda p: np.savez(p, parameters=np.zeros(3)), "not a backprop checkpoint: it has no 'meta' record"),
    (lambda p: rewrite_v1(p, arrays={"meta": np.frombuffer(b"{oops", dtype=np.uint8)}), "records are not valid JSON"),
    (lambda p: rewrite_v1(p, arrays={"parameters": np.zeros(7)}), r"tensor 'parameters' has shape \(7,\)"),
    (lambda p: rewrite_v1(p, drop=["layer2.step"]), r"layer 2 state has \[\], expected \['step'\]"),
    (lambda p: rewrite_v1(p, meta={"version": 3}), "has checkpoint format version 3"),
], ids=["no-meta", "bad-json", "parameter-count", "missing-layer-state", "version"])
def test_a_damaged_version_1_file_is_refused(tmp_path, craft, match):
    path = v1_copy(tmp_path)
    craft(path)
    with pytest.raises(ValueError, match=match):
        bp.load(path, optimizer=True)


@pytest.mark.parametrize("key", ["parameters", "meta", "layer2.step", "optimizer.exp_avg"])
def test_loading_never_unpickles(tmp_path, key):
    """Safetensors files hold no objects; a version-1 .npz could, and is refused unread."""
    path = v1_copy(tmp_path)
    marker = tmp_path / "code-ran"
    rewrite_v1(path, arrays={key: np.array([_Marker(marker)], dtype=object)})
    with pytest.raises(ValueError, match="it holds Python objects, which backprop never unpickles"):
        bp.load(path, optimizer=True)
    assert not marker.exists()


def test_a_saved_checkpoint_has_the_umask_permissions_of_a_new_file(tmp_path):
    """The temporary file is renamed into place: it must not carry mkstemp's private 0o600."""
    previous = os.umask(0o022)
    try:
        path = bp.save(bp.Sequential(bp.Dense(3, 2), seed=0), tmp_path / "model.safetensors")
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_a_checkpoint_is_plain_safetensors_that_any_reader_opens_by_name(tmp_path):
    """What PyTorch's and JAX's users open: safetensors' own loader (here its NumPy one; the
    torch and flax loaders read the same bytes) gives every parameter and buffer by name."""
    from safetensors.numpy import load_file

    net, opt = make("adam", "float32")
    train(net, opt, epochs=1)
    bp.save(net, tmp_path / "m.safetensors", optimizer=opt)
    tensors = load_file(str(tmp_path / "m.safetensors"))
    for param in net.parameters():
        np.testing.assert_array_equal(tensors[param.name], param.data)
    np.testing.assert_array_equal(tensors["layers.2.running_var"], net.layers[2].running_var)
    assert tensors["layers.0.weight"].dtype == np.float32 and tensors["layers.0.weight"].shape == (5, 8)
