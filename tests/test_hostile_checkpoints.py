"""Checkpoints as hostile input: every value in a file is checked, not only its shape, and every
malformed file is a ValueError naming it (never RecursionError, TypeError, KeyError,
MemoryError or NumPy's advice about allow_pickle=). Loading costs memory in proportion to the
data a file really holds: records and tensor headers are checked before anything is allocated.
"""

from __future__ import annotations

import io
import json
import math
import os
import pathlib
import re
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from checkpoint_helpers import DATA, N_PARAMS, X, Y, make, read, read_v1, rewrite, saved, state, train, v1_copy, write, write_v1
from safetensors.numpy import save_file

import backprop as bp
from backprop.checkpoint import _digest
from backprop.training import TrainingDivergedError


def deeply_nested(depth: int):
    value = []
    for _ in range(depth):
        value = [value]
    return value


# One value of every JSON type, and the awkward members of each: what a crafted record can hold.
JSON_VALUES = {
    "null": None, "true": True, "false": False, "zero": 0, "negative": -1, "huge-int": 10**30,
    "whole-float": 3.0, "fraction": 0.5, "tiny": 1e-300, "huge-float": 1e300, "nan": math.nan, "inf": math.inf,
    "string": "x", "empty-string": "", "empty-array": [], "array": [1, "a", None], "empty-object": {},
    "object": {"a": 1}, "nested": deeply_nested(900),
}


def key_paths(value, prefix=()):
    """Every path into a JSON value: (key or index, ...) for each object member and array element."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, member in items:
        yield prefix + (key,)
        yield from key_paths(member, prefix + (key,))


def replaced(record, path, value):
    """A copy of `record` with the value at `path` replaced."""
    record = json.loads(json.dumps(record))
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return record


def loads_or_is_refused(path, data=(X, Y)) -> str | None:
    """None when the file loads and the network, optimizer and schedule it holds train without
    trouble, or it is refused with a ValueError naming the file; else what went wrong."""
    try:
        net, opt, sched = bp.load(path, optimizer=True, scheduler=True)
    except ValueError as exc:
        return None if str(exc).startswith(str(path)) else f"ValueError not naming the file: {exc}"
    except Exception as exc:  # any other kind is the failure looked for
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    try:
        bp.fit(net, *data, loss=bp.CrossEntropyLoss(), optimizer=opt, scheduler=sched, epochs=1, batch_size=8,
               progress=False)
    except TrainingDivergedError:  # a legal but wild hyperparameter (lr 1e300): refused, nothing changed
        return None
    except ValueError as exc:  # likewise a schedule whose lr overflows (gamma 1e300)
        if "learning rate at epoch" in str(exc):
            return None
        return f"loaded, then training failed: ValueError: {str(exc)[:200]}"
    except Exception as exc:
        return f"loaded, then training failed: {type(exc).__name__}: {str(exc)[:200]}"
    if not np.isfinite(net.store.data).all():
        return "loaded, then training wrote non-finite weights"
    return None


def saved_with_schedule(tmp_path):
    net, opt = make()
    sched = bp.StepLR(opt, step_size=1, gamma=0.5)
    bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), optimizer=opt, scheduler=sched, epochs=2, batch_size=8,
           progress=False)
    return bp.save(net, tmp_path / "model.safetensors", optimizer=opt, scheduler=sched)


# ---------------------------------------------------------------------- every record, every JSON type


def test_every_record_of_every_json_type_loads_or_is_refused_naming_the_file(tmp_path):
    """For each key path of the records (architecture, each layer's arguments, counters, epochs,
    optimizer, schedule) and each JSON value, the file loads and trains, or is a ValueError
    naming it."""
    path = saved_with_schedule(tmp_path)
    metadata, records, tensors = read(path)
    failures = []
    for key_path in key_paths(records):
        for name, value in JSON_VALUES.items():
            write(path, metadata, replaced(records, key_path, value), tensors)
            problem = loads_or_is_refused(path)
            if problem:
                failures.append(f"{'.'.join(map(str, key_path))} = {name}: {problem}")
    assert not failures, "\n".join(failures)


def test_every_version_1_record_of_every_json_type_loads_or_is_refused_naming_the_file(tmp_path):
    """Version 1 keeps the same records (rebuilt by the same code, fuzzed above) beside its own
    format and version fields: each top-level record, replaced by each JSON value."""
    path = v1_copy(tmp_path)
    records, arrays = read_v1(path)
    with np.load(DATA / "checkpoint_v1_expected.npz") as expected:
        data = expected["X"], expected["y"]
    failures = []
    for key_path in [(key,) for key in records]:
        for name, value in JSON_VALUES.items():
            write_v1(path, replaced(records, key_path, value), arrays)
            problem = loads_or_is_refused(path, data)
            if problem:
                failures.append(f"{'.'.join(map(str, key_path))} = {name}: {problem}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------- every tensor, every wrong kind


def tensor_variants(values: np.ndarray) -> dict:
    """Each way a crafted file can get one tensor wrong, or right in an unusual way."""
    floats = np.result_type(values.dtype, np.float16)
    return {
        "ints": values.astype(np.int32), "booleans": values > 0, "float16": values.astype(np.float16),
        "nan": np.full(values.shape, np.nan, floats), "inf": np.full(values.shape, np.inf, floats),
        "beyond-float32": np.full(values.shape, 1e300), "negative": -np.abs(values) - 1,
        "scalar": values.reshape(-1)[:1].reshape(()), "empty": values.reshape(-1)[:0], "extra-axis": values[None],
    }


def each_tensor_replaced(path, tensors: dict, write_file, data=(X, Y), extra=lambda values: {}) -> list[str]:
    """Write the file (`write_file(tensors)`) with each tensor replaced by each of its variants,
    or left out; what `loads_or_is_refused` finds wrong with each."""
    failures = []
    for key in sorted(tensors):
        for name, values in {**tensor_variants(tensors[key]), **extra(tensors[key]), "missing": None}.items():
            contents = {k: v for k, v in tensors.items() if k != key}
            if values is not None:
                contents[key] = values
            write_file(contents)
            problem = loads_or_is_refused(path, data)
            if problem:
                failures.append(f"{key} {name}: {problem}")
    return failures


def test_every_tensor_of_every_wrong_kind_loads_or_is_refused_naming_the_file(tmp_path):
    path = saved_with_schedule(tmp_path)
    metadata, records, tensors = read(path)
    failures = each_tensor_replaced(path, tensors, lambda contents: write(path, metadata, records, contents))
    assert not failures, "\n".join(failures)


def test_every_version_1_array_of_every_wrong_kind_loads_or_is_refused_naming_the_file(tmp_path):
    """Version 1 (.npz) can also hold strings and big-endian arrays."""
    path = v1_copy(tmp_path)
    records, arrays = read_v1(path)
    with np.load(DATA / "checkpoint_v1_expected.npz") as expected:
        data = expected["X"], expected["y"]
    failures = each_tensor_replaced(
        path, arrays, lambda contents: write_v1(path, records, contents), data,
        extra=lambda values: {"strings": values.astype(str), "big-endian": values.astype(values.dtype.newbyteorder(">"))})
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------- values no training can use


def refused(path, match, **kwargs):
    with pytest.raises(ValueError, match=match) as info:
        bp.load(path, **kwargs)
    assert str(info.value).startswith(str(path)), info.value


def test_a_negative_or_non_finite_batchnorm_running_variance_is_refused(tmp_path):
    """BatchNorm declares running_var a variance (add_buffer(..., minimum=0.0)): a negative one
    would take the square root of a negative number in eval mode."""
    path = saved(tmp_path)
    running_var = read(path)[2]["layers.2.running_var"]
    for bad, match in [(np.where(np.arange(8) == 3, -0.5, running_var), r"running_var must be >= 0 everywhere, got -0.5"),
                       (np.full(8, np.nan), "non-finite"), (np.full(8, np.inf), "non-finite")]:
        rewrite(path, tensors={"layers.2.running_var": bad.astype(np.float32)})
        refused(path, rf"tensor 'layers.2.running_var' .*{match}")
    rewrite(path, tensors={"layers.2.running_var": np.zeros(8, dtype=np.float32)})  # zero is a variance
    assert bp.load(path).layers[2].running_var.min() == 0


def test_a_version_1_negative_running_variance_is_refused(tmp_path):
    path = v1_copy(tmp_path)
    records, arrays = read_v1(path)
    write_v1(path, records, {**arrays, "layer1.running_var": -arrays["layer1.running_var"]})
    refused(path, r"tensor 'layer1.running_var' \(layer 1\): BatchNorm's running_var must be >= 0")


def test_negative_or_non_finite_optimizer_moments_are_refused(tmp_path):
    """Adam's exp_avg_sq is a mean of squares (state_minimum 0): negative, it makes the step's
    square root NaN; NaN or inf moments poison every weight at the first step."""
    path = saved(tmp_path)
    tensors = read(path)[2]
    for name, bad, match in [
        ("exp_avg_sq", -tensors["optimizer.exp_avg_sq"] - 1e-3, "'exp_avg_sq' must be >= 0 everywhere"),
        ("exp_avg_sq", np.full_like(tensors["optimizer.exp_avg_sq"], np.inf), "'exp_avg_sq' holds non-finite"),
        ("exp_avg", np.full_like(tensors["optimizer.exp_avg"], np.nan), "'exp_avg' holds non-finite"),
    ]:
        rewrite(path, tensors={f"optimizer.{name}": bad})
        refused(path, f"invalid optimizer record .*{match}", optimizer=True)
        bp.load(path)  # the network alone is fine
        rewrite(path, tensors={f"optimizer.{name}": tensors[f"optimizer.{name}"]})


def test_values_beyond_the_networks_dtype_are_refused(tmp_path):
    """1e300 is finite in float64 but inf in a float32 network's parameters."""
    path = saved(tmp_path)
    rewrite(path, tensors={"layers.0.bias": np.full(8, 1e300)})
    refused(path, "tensor 'layers.0.bias' holds non-finite values")
    rewrite(path, tensors={"layers.0.bias": np.full(8, 0.25)})  # in float64 but representable: loads
    assert (bp.load(path).layers[0].bias.data == 0.25).all()


@pytest.mark.parametrize("key", ["layers.0.bias", "layers.2.running_mean", "optimizer.exp_avg"])
@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_])
def test_a_tensor_that_is_not_floating_point_is_refused(tmp_path, key, dtype):
    path = saved(tmp_path)
    values = read(path)[2][key]
    rewrite(path, tensors={key: values.astype(dtype)})
    refused(path, rf"tensor '{key}' holds {np.dtype(dtype)} values, not floating-point numbers", optimizer=True)


def test_a_version_1_array_of_strings_is_refused(tmp_path):
    path = v1_copy(tmp_path)
    records, arrays = read_v1(path)
    write_v1(path, records, {**arrays, "parameters": arrays["parameters"].astype(str)})
    refused(path, r"tensor 'parameters' holds <U\d+ values, not floating-point numbers")


BAD_COUNTS = {"negative": -1, "whole-float": 3.0, "boolean": True, "string": "3", "null": None, "fraction": 2.5}


def with_record(path, where: str, value):
    records = read(path)[1]
    if where == "epochs_trained":
        records["epochs_trained"] = value
    elif where == "counter":
        records["counters"][1]["step"] = value
    elif where == "step_count":
        records["optimizer"]["step_count"] = value
    else:
        records["scheduler"]["epoch"] = value
    rewrite(path, record=records)


@pytest.mark.parametrize("where", ["epochs_trained", "counter", "step_count", "scheduler-epoch"])
@pytest.mark.parametrize("kind", sorted(BAD_COUNTS))
def test_a_step_count_that_is_not_a_non_negative_integer_is_refused(tmp_path, where, kind):
    """Step counts key the shuffles, the dropout masks, Adam's bias correction and the schedule:
    -1 would make Adam take the square root of a negative number after the first step had
    changed the weights; 3.0 and true are JSON's other spellings of a number, refused too."""
    path = saved_with_schedule(tmp_path)
    with_record(path, where, BAD_COUNTS[kind])
    refused(path, "non-negative integer|counter", scheduler=True)


@pytest.mark.parametrize("hyperparameters, match", [
    ({"lr": -1.0}, "lr must be a finite number >= 0.0, got -1.0"),
    ({"lr": math.nan}, "lr must be a finite number >= 0.0, got nan"),
    ({"betas": [1.5, 0.9]}, r"betas\[0\] must be in \[0.0, 1.0\), got 1.5"),
    ({"betas": [0.9]}, r"betas must be a pair \(beta1, beta2\), got \[0.9\]"),
    ({"eps": "small"}, "eps must be a real number, got str 'small'"),
    ({"momentum": 0.9}, "unexpected keyword argument 'momentum'"),
])
def test_hyperparameters_out_of_range_are_refused_with_the_optimizers_message_and_the_file(
        tmp_path, hyperparameters, match):
    path = saved(tmp_path)
    records = read(path)[1]
    records["optimizer"]["hyperparameters"].update(hyperparameters)
    rewrite(path, record=records)
    refused(path, f"invalid optimizer record .*{match}", optimizer=True)


@bp.register_layer
class Tally(bp.Layer):
    """A user's layer with two buffers: a count (declared >= 0) and a share that its own
    check_buffer keeps in [0, 1]."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.input_shape = (width,)

    def build(self, input_shape):
        self.add_buffer("count", (self.width,), 0.0, minimum=0.0)
        self.add_buffer("share", (self.width,), 0.5)
        return input_shape

    def forward(self, x, training):
        return x

    def backward(self, grad_y, need_input_grad=True):
        return grad_y

    def check_buffer(self, name, values):
        super().check_buffer(name, values)
        if name == "share" and values.max() > 1:
            raise ValueError(f"share must be in [0, 1], got {values.max()}")


def test_a_users_layer_declares_what_its_buffers_may_hold(tmp_path):
    """The checkpoint code never names a layer type: a user's layer is checked by its own
    declared minimum and its own check_buffer."""
    path = tmp_path / "tally.safetensors"
    bp.save(bp.Sequential(Tally(3), bp.Dense(3, 2), seed=0), path)
    for name, bad, match in [("count", [1.0, -2.0, 0.0], "Tally's count must be >= 0 everywhere, got -2.0"),
                             ("share", [0.5, 1.5, 0.0], r"share must be in \[0, 1\], got 1.5")]:
        rewrite(path, tensors={f"layers.0.{name}": np.array(bad, dtype=np.float32)})
        refused(path, rf"tensor 'layers.0.{name}' \(layer 0\): {match}")
        rewrite(path, tensors={f"layers.0.{name}": np.zeros(3, dtype=np.float32)})
    rewrite(path, tensors={"layers.0.count": np.array([4.0, 0.0, 1.0], dtype=np.float32),
                           "layers.0.share": np.array([1.0, 0.0, 0.25], dtype=np.float32)})
    assert bp.load(path).layers[0].share.tolist() == [1.0, 0.0, 0.25]


@pytest.mark.parametrize("layer_index, name, bad, match", [
    (0, "count", [1.0, -2.0, 0.0], r"buffer 'count' of layer 0 \(Tally\): Tally's count must be >= 0 everywhere, got -2.0"),
    (0, "share", [0.5, 1.5, 0.0], r"buffer 'share' of layer 0 \(Tally\): share must be in \[0, 1\], got 1.5"),
    (0, "share", [0.5, np.nan, 0.0], r"buffer 'share' of layer 0 \(Tally\) holds NaN or inf"),
    (2, "running_var", [-1.0] * 2, r"buffer 'running_var' of layer 2 \(BatchNorm\): BatchNorm's running_var must be >= 0"),
    (2, "running_mean", [np.inf] * 2, r"buffer 'running_mean' of layer 2 \(BatchNorm\) holds NaN or inf"),
], ids=["below-declared-minimum", "layers-own-check", "nan", "negative-variance", "inf"])
def test_save_refuses_a_buffer_that_load_would_refuse_and_writes_nothing(tmp_path, layer_index, name, bad, match):
    net = bp.Sequential(Tally(3), bp.Dense(3, 2), bp.BatchNorm(2), seed=0)
    getattr(net.layers[layer_index], name)[...] = np.array(bad)
    with pytest.raises(ValueError, match=rf"cannot save: {match}.*which bp.load refuses"):
        bp.save(net, tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())


def test_save_refuses_parameters_or_optimizer_state_that_load_would_refuse_and_writes_nothing(tmp_path):
    net = bp.Sequential(bp.Dense(3, 2), seed=0)
    opt = bp.Adam(net.parameters())
    net.layers[0].bias.data[1] = np.nan  # written into the view: an assignment would refuse it
    with pytest.raises(ValueError, match=r"cannot save: parameter 'layers.0.bias' holds NaN or inf, which bp.load "
                                         "refuses"):
        bp.save(net, tmp_path / "m.safetensors")
    net.layers[0].bias.data = np.zeros(2)
    opt.state["exp_avg_sq"][...] = -1.0
    with pytest.raises(ValueError, match=r"cannot save: optimizer state 'exp_avg_sq' must be >= 0 everywhere, got "
                                         r"-1.0, which bp.load refuses"):
        bp.save(net, tmp_path / "m.safetensors", optimizer=opt)
    assert not list(tmp_path.iterdir())
    bp.save(net, tmp_path / "m.safetensors")  # without that optimizer, it saves


def test_add_buffer_checks_its_minimum():
    layer = Tally(2)
    with pytest.raises(TypeError, match="minimum must be a real number, got str"):
        layer.add_buffer("other", (2,), minimum="0")


@pytest.mark.parametrize("gamma, epochs", [(1e300, 2), (10.0, 400)])
def test_a_schedule_whose_lr_overflows_is_refused_and_changes_nothing(gamma, epochs):
    """A gamma of 1e300 is a legal record, but the lr it gives two epochs on is not a float:
    the schedule says so, before it changes the epoch or the lr, rather than fit failing with
    OverflowError after the epoch (Python's float ** raises where * would give inf)."""
    net = bp.Sequential(bp.Dense(6, 2), seed=0)
    opt = bp.SGD(net.parameters(), lr=1e-3)
    sched = bp.ExponentialLR(opt, gamma=gamma)
    sched.epoch = epochs - 1
    lr = opt.lr
    with pytest.raises(ValueError, match=re.escape(f"ExponentialLR's learning rate at epoch {epochs} would be inf "
                                                   f"(base_lr 0.001, gamma {gamma!r})")):
        sched.step()
    assert (sched.epoch, opt.lr) == (epochs - 1, lr)


# ---------------------------------------------------------------------- malformed files


def safetensors_bytes(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """A file in safetensors' layout: the header's length (u64, little-endian), the JSON header, the data."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


MALFORMED = {
    "empty": b"",
    "one-byte": b"\x00",
    "length-only": struct.pack("<Q", 40),
    "random-short": np.random.default_rng(1).bytes(9),
    "random-long": np.random.default_rng(2).bytes(50_000),
    "zip-magic-then-random": b"PK\x03\x04" + np.random.default_rng(3).bytes(2_000),
    "header-length-beyond-the-file": safetensors_bytes({}, length=2**40),
    "header-length-2**64-1": safetensors_bytes({}, length=2**64 - 1),
    "header-not-json": safetensors_bytes(b"{not json at all}"),
    "header-deeply-nested": safetensors_bytes(b'{"__metadata__": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "tensor-beyond-the-data": safetensors_bytes({"w": {"dtype": "F32", "shape": [10**7, 10**7],
                                                       "data_offsets": [0, 4 * 10**14]}}, b"\0" * 64),
    "tensor-of-unknown-dtype": safetensors_bytes({"w": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}},
                                                 b"\0" * 8),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_file_is_a_value_error_naming_it(tmp_path, name):
    path = tmp_path / "model.safetensors"
    path.write_bytes(MALFORMED[name])
    refused(path, "not a (readable |valid )?backprop checkpoint", optimizer=True)


def signed_records(path, records_text: str) -> None:
    """Replace the records by `records_text` (any text, JSON or not), with a valid checksum."""
    metadata, _, tensors = read(path)
    metadata["backprop"] = records_text
    metadata["sha256"] = _digest(records_text, sorted(tensors), tensors.__getitem__)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("records, match", [
    ("[" * 100_000 + "]" * 100_000, r"records are not valid JSON \(RecursionError\)"),
    ('{"architecture": ' + "[" * 5_000 + "]" * 5_000 + "}", r"records are not valid JSON \(RecursionError\)"),
    ('{"epochs_trained": ' + "9" * 5_000 + "}", r"records are not valid JSON \(ValueError\)"),
    ("[1, 2]", "records are not a JSON object"),
    ("", r"records are not valid JSON \(JSONDecodeError\)"),
], ids=["nested-100000", "nested-5000-inside", "int-of-5000-digits", "array", "empty"])
def test_records_that_python_cannot_parse_are_a_value_error_naming_the_file(tmp_path, records, match):
    """Python's json raises RecursionError past ~1000 levels and ValueError for ints of over 4300
    digits: both are the file's fault, said as such."""
    path = saved(tmp_path)
    signed_records(path, records)
    refused(path, match)


def test_version_1_members_are_checked_before_they_are_read(tmp_path):
    path = v1_copy(tmp_path)
    data = path.read_bytes()
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (5_000_000,)})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("extra.npy", header.getvalue() + b"\0" * 64)
    refused(path, r"member 'extra.npy' declares shape \(5000000,\) of float64 \(40000000 bytes\), but holds 64 bytes")

    path.write_bytes(data)
    compressed = tmp_path / "compressed.npz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.namelist():
            target.writestr(member, source.read(member))
    refused(compressed, "member '.*' is compressed, which backprop's .npz checkpoints never are")


# ---------------------------------------------------------------------- memory in proportion to the data


def peak_bytes(call) -> int:
    """The most memory (bytes, as tracemalloc sees NumPy's and Python's allocations) during `call`."""
    tracemalloc.start()
    try:
        call()
    except ValueError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_an_architecture_declaring_huge_layers_is_refused_before_allocating(tmp_path):
    """Dense(10**7, 10**7) would be 400 TB: refused by its tensors' headers, before allocating."""
    path = saved(tmp_path)
    rewrite(path, record={"architecture": {"layers": [{"type": "Dense", "in_features": 10**7, "out_features": 10**7},
                                                      {"type": "BatchNorm", "num_features": 10**7}],
                                           "dtype": "float32", "seed": 0}})
    refused(path, r"tensor 'layers.0.weight' has shape \(5, 8\), but the architecture declares \(10000000, 10000000\)")
    assert peak_bytes(lambda: bp.load(path)) < 1_000_000


def test_a_plausible_large_architecture_over_small_tensors_allocates_nothing_large(tmp_path):
    """Dense(4000, 4000) (64 MB of parameters and gradients) declared over this small file's
    tensors: the headers disagree, so nothing is allocated."""
    path = saved(tmp_path)
    rewrite(path, record={"architecture": {"layers": [{"type": "Dense", "in_features": 4000, "out_features": 4000}],
                                           "dtype": "float32", "seed": 0}})
    assert peak_bytes(lambda: bp.load(path)) < 1_000_000


@pytest.mark.parametrize("name", ["tensor-beyond-the-data", "header-length-beyond-the-file"])
def test_a_safetensors_header_declaring_enormous_tensors_allocates_nothing(tmp_path, name):
    path = tmp_path / "model.safetensors"
    path.write_bytes(MALFORMED[name])
    assert peak_bytes(lambda: bp.load(path)) < 1_000_000


def test_a_small_version_1_file_promising_a_large_array_allocates_nothing(tmp_path):
    """A 7 KB .npz whose member's header promises 40 MB: refused before the 40 MB are allocated
    (np.load would allocate them, then find the data missing)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (5_000_000,)})
    path = tmp_path / "v1.npz"
    with zipfile.ZipFile(DATA / "checkpoint_v1.npz") as source, zipfile.ZipFile(path, "w") as target:
        for member in source.namelist():
            hostile = member == "parameters.npy"
            target.writestr(member, header.getvalue() + b"\0" * 64 if hostile else source.read(member))
    assert path.stat().st_size < 10_000
    assert peak_bytes(lambda: bp.load(path)) < 1_000_000


def test_a_version_1_file_of_compressed_zeros_is_not_decompressed(tmp_path):
    """40 MB of zeros deflate to 40 KB: such a member is refused unread."""
    path = v1_copy(tmp_path)
    records, arrays = read_v1(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, values in {**arrays, "meta": np.frombuffer(json.dumps(records).encode(), np.uint8),
                            "zeros": np.zeros(5_000_000)}.items():
            buffer = io.BytesIO()
            np.save(buffer, values)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    assert path.stat().st_size < 100_000
    assert peak_bytes(lambda: bp.load(path)) < 1_000_000


def test_loading_costs_memory_in_proportion_to_the_file(tmp_path):
    """A 2.5 MB checkpoint: the parameters and their gradients, and a tensor at a time while
    reading, not a multiple of the file in copies."""
    net = bp.Sequential(bp.Dense(300, 1000, activation="relu"), bp.Dense(1000, 300), seed=0)
    path = tmp_path / "model.safetensors"
    bp.save(net, path, optimizer=bp.Adam(net.parameters()))
    size = path.stat().st_size
    assert peak_bytes(lambda: bp.load(path)) < 1.5 * size
    assert peak_bytes(lambda: bp.load(path, optimizer=True)) < 3 * size


# ---------------------------------------------------------------------- arguments, and save


def test_load_blames_its_arguments_not_the_file(tmp_path):
    path = saved(tmp_path)
    with pytest.raises(TypeError, match="device must be a string such as 'cpu' or 'cuda:0', or None, got int 3"):
        bp.load(path, device=3)
    with pytest.raises(ValueError, match="device must be .*got 'tpu'") as info:
        bp.load(path, device="tpu")
    assert str(path) not in str(info.value)
    with pytest.raises(TypeError, match="optimizer must be True or False, got str 'yes'"):
        bp.load(path, optimizer="yes")
    with pytest.raises(TypeError, match="scheduler must be True or False, got int 1"):
        bp.load(path, scheduler=1)


def test_an_optimizer_of_some_layers_round_trips_and_resumes_exactly(tmp_path):
    """Fine-tuning the last layer only: the saved optimizer covers part of the flat buffer, and
    load(optimizer=True) rebuilds it over the same parameters."""
    def partial():
        net, _ = make()
        return net, bp.Adam(net.layers[3].parameters() + net.layers[0].parameters(), lr=0.01)

    whole, whole_opt = partial()
    train(whole, whole_opt, 4)

    first, first_opt = partial()
    train(first, first_opt, 2)
    bp.save(first, tmp_path / "m.safetensors", optimizer=first_opt)
    resumed, resumed_opt = bp.load(tmp_path / "m.safetensors", optimizer=True)
    assert resumed_opt.segments == first_opt.segments == [(0, 48), (64, 82)]  # BatchNorm's 16 left out
    assert sorted(p.name for p in resumed_opt.params) == sorted(p.name for p in first_opt.params)
    train(resumed, resumed_opt, 2)
    assert state(resumed, resumed_opt) == state(whole, whole_opt)


@pytest.mark.parametrize("segments, match", [
    ([[0, 45]], "do not fall on the network's parameters"),
    ([[48, 66], [40, 47]], "do not fall on the network's parameters"),
    ([[1000, 2000]], "hold none of the network's parameters"),
    ([[0, 7]], "hold none of the network's parameters"),
    ([], "segments must be a non-empty list of"),
    ([[0, "66"]], "segments must be a non-empty list of"),
])
def test_optimizer_segments_that_do_not_match_the_parameters_are_refused(tmp_path, segments, match):
    path = saved(tmp_path)
    records = read(path)[1]
    records["optimizer"]["segments"] = segments
    rewrite(path, record=records)
    refused(path, f"invalid optimizer record .*{match}", optimizer=True)


def test_saving_into_a_folder_that_is_not_there_names_the_path_given(tmp_path):
    net, _ = make()
    target = tmp_path / "missing" / "model.safetensors"
    with pytest.raises(FileNotFoundError, match=f"cannot save to '{target}': the folder '{target.parent}' does not exist"):
        bp.save(net, target)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match=f"cannot save to '{tmp_path}/file/m.safetensors': "
                                                 f"'{tmp_path}/file' is not a folder"):
        bp.save(net, tmp_path / "file" / "m.safetensors")


def test_a_failed_write_names_the_path_given_not_a_temporary_file(tmp_path, monkeypatch):
    """Whatever fails (creating our temporary file, or safetensors writing its own), the error
    is an OSError that names the path the caller gave, and no temporary file is left."""
    import safetensors.numpy
    from safetensors import SafetensorError

    net, _ = make()
    target = tmp_path / "model.safetensors"

    def fails_like_safetensors(tensors, filename, metadata=None):
        raise SafetensorError(f'Error while serializing: I/O error: No space left on device (os error 28) at path '
                              f'"{tmp_path}/.tmpAbC123"')

    monkeypatch.setattr(safetensors.numpy, "save_file", fails_like_safetensors)
    with pytest.raises(OSError) as info:
        bp.save(net, target)
    assert str(info.value) == f"cannot save to '{target}': Error while serializing: I/O error: No space left on " \
                              "device (os error 28)"
    monkeypatch.undo()

    real_open = os.open

    def open_refused(name, *args, **kwargs):
        if ".tmp-" in str(name):
            raise PermissionError(13, "Permission denied", name)
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_refused)
    with pytest.raises(PermissionError, match=rf"cannot save to '{target}': Permission denied") as info:
        bp.save(net, target)
    assert ".tmp" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- tensors nothing declares, layer counts


@pytest.mark.parametrize("name", ["layers.0.foo", "layers.1.weight", "layers.4.bias", "layers.x", "layers.0.weight.T"])
def test_a_tensor_under_layers_that_the_architecture_does_not_declare_is_refused_naming_it(tmp_path, name):
    """Version 1 always refused a layer state it did not expect; version 2 read only what the
    architecture declares and dropped the rest silently."""
    path = saved(tmp_path)
    rewrite(path, tensors={name: np.zeros(3, dtype=np.float32)})
    refused(path, rf"tensor '{re.escape(name)}' is not declared by the architecture \(which declares \[")


def test_a_tensor_under_optimizer_that_the_optimizer_does_not_declare_is_refused_naming_it(tmp_path):
    path = saved(tmp_path, optimizer="sgd")  # SGD with momentum declares momentum_buffer only
    rewrite(path, tensors={"optimizer.exp_avg": np.zeros(N_PARAMS, dtype=np.float32)})
    bp.load(path)  # the network alone reads no optimizer tensor
    refused(path, r"tensor 'optimizer.exp_avg' is not declared by the optimizer \(sgd\)", optimizer=True)


def test_a_version_1_layer_state_beyond_the_last_layer_is_refused(tmp_path):
    path = v1_copy(tmp_path)
    records, arrays = read_v1(path)
    write_v1(path, records, {**arrays, "layer9.step": np.array(0)})
    refused(path, r"tensor 'layer9.step' is not declared by the architecture", optimizer=True)


def test_tensors_outside_the_layers_and_optimizer_namespaces_are_left_to_their_owners(tmp_path):
    """Other records (a data set's scaling, say) may keep tensors of their own names."""
    path = saved(tmp_path)
    rewrite(path, tensors={"scaling.mean": np.zeros(5, dtype=np.float32)})
    net, opt = bp.load(path, optimizer=True)
    assert type(opt) is bp.Adam


def flatten_stack(tmp_path, count: int) -> pathlib.Path:
    """A valid checkpoint of Dense(2, 2) followed by `count` Flatten layers (a few bytes each)."""
    path = bp.save(bp.Sequential(bp.Dense(2, 2), bp.Flatten(), seed=0), tmp_path / "flat.safetensors")
    metadata, records, tensors = read(path)
    records["architecture"]["layers"] += [records["architecture"]["layers"][1]] * (count - 1)
    records["counters"] += [{}] * (count - 1)
    write(path, metadata, records, tensors)
    return pathlib.Path(path)


def test_a_checkpoint_declaring_more_layers_than_the_limit_is_refused_before_building_them(tmp_path, monkeypatch):
    """50,000 Flatten layers are a 1.25 MB file; building them cost seconds and tens of MB."""
    from backprop import checkpoint

    path = flatten_stack(tmp_path, 50_000)
    refused(path, r"it declares 50,001 layers; backprop loads at most 10,000")
    monkeypatch.setattr(checkpoint, "MAX_LAYERS", 6)
    assert len(bp.load(flatten_stack(tmp_path, 5)).layers) == 6  # up to the limit, it loads
    refused(flatten_stack(tmp_path, 6), r"it declares 7 layers; backprop loads at most 6")
    with pytest.raises(ValueError, match=r"net has 7 layers; a checkpoint holds at most 6 \(bp.load refuses more\)"):
        bp.save(bp.Sequential(bp.Dense(2, 2), *[bp.Flatten() for _ in range(6)], seed=0), tmp_path / "n.safetensors")
    assert not (tmp_path / "n.safetensors").exists()


def test_anything_but_a_regular_file_is_refused_before_it_is_read(tmp_path):
    """A FIFO blocked bp.load forever, waiting for a writer (in another process: a load blocked
    inside safetensors would hold this one); a device is no checkpoint either."""
    import subprocess
    import sys

    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    code = "import sys, backprop as bp\ntry:\n    bp.load(sys.argv[1])\nexcept ValueError as exc:\n    print(exc)"
    done = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=60, cwd="/")
    assert done.stdout.strip() == f"{fifo} is a named pipe (FIFO), not a regular file", done.stderr
    with pytest.raises(ValueError, match="^/dev/zero is a character device, not a regular file$"):
        bp.load("/dev/zero")
    with pytest.raises(IsADirectoryError, match=f"^{re.escape(str(tmp_path))} is a folder, not a file$"):
        bp.load(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(str(tmp_path / 'none'))}: no such file$"):
        bp.load(tmp_path / "none")
