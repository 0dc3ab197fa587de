"""Making, reading and crafting checkpoints, for the checkpoint tests."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

import backprop as bp
from backprop.checkpoint import _digest

DATA = pathlib.Path(__file__).parent / "data"
rng = np.random.default_rng(0)
X = rng.normal(size=(40, 5))
Y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int)
OPTIMIZERS = {
    "sgd": lambda params: bp.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda params: bp.Adam(params, lr=0.01),
    "adamw": lambda params: bp.AdamW(params, lr=0.01, betas=(0.8, 0.99)),
}


def make(optimizer="adam", dtype="float32"):
    net = bp.Sequential(bp.Dense(5, 8, activation="relu"), bp.Dropout(0.3), bp.BatchNorm(8),
                        bp.Dense(8, 2), dtype=dtype, seed=3)
    return net, OPTIMIZERS[optimizer](net.parameters())


N_PARAMS = make()[0].num_parameters()


def train(net, opt, epochs):
    return bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=epochs, batch_size=8,
                  progress=False)


def state(net, opt=None) -> list:
    """Everything that decides the next step, as bytes."""
    parts = [net.store.data.tobytes(), net.dtype, net.seed, net.epochs_trained, net.config()]
    parts += [(k, np.asarray(v).tobytes()) for layer in net.layers for k, v in sorted(layer.state().items())]
    if opt is not None:
        parts += [type(opt), opt.hyperparameters(), opt.step_count]
        parts += [(name, buf.tobytes()) for name, buf in sorted(opt.state.items())]
    return parts


def saved(tmp_path, name="model.safetensors", epochs=2, **kwargs) -> pathlib.Path:
    net, opt = make(**kwargs)
    train(net, opt, epochs)
    return pathlib.Path(bp.save(net, tmp_path / name, optimizer=opt))


def read(path) -> tuple[dict, dict, dict]:
    """(metadata, records, tensors) of a version-2 file."""
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    return metadata, json.loads(metadata["backprop"]), tensors


def rewrite(path, record=None, tensors=None, drop=(), metadata=None, sign=True):
    """Re-save a checkpoint with some records, tensors or metadata replaced (a crafted file),
    signed with a valid checksum unless `sign` is False: the checks behind the checksum are
    what such a file meets."""
    meta, records, contents = read(path)
    records.update(record or {})
    contents.update(tensors or {})
    for key in drop:
        del contents[key]
    write(path, meta, records, contents, metadata, sign)


def write(path, meta: dict, records: dict, tensors: dict, metadata=None, sign=True) -> None:
    """Write a version-2 file of these metadata, records and tensors (see `rewrite`)."""
    meta = {**meta, "backprop": json.dumps(records)}
    if sign:
        meta["sha256"] = _digest(meta["backprop"], sorted(tensors), tensors.__getitem__)
    meta.update(metadata or {})
    save_file(tensors, str(path), metadata=meta)


def v1_copy(tmp_path) -> pathlib.Path:
    path = tmp_path / "v1.npz"
    shutil.copy(DATA / "checkpoint_v1.npz", path)
    return path


def read_v1(path) -> tuple[dict, dict]:
    """(records, arrays) of a version-1 file."""
    with np.load(path, allow_pickle=False) as npz:
        contents = {key: npz[key] for key in npz.files}
    return json.loads(contents.pop("meta").tobytes()), contents


def rewrite_v1(path, meta=None, arrays=None, drop=()):
    """Re-save a version-1 checkpoint with some records or arrays replaced."""
    record, contents = read_v1(path)
    record.update(meta or {})
    contents.update(arrays or {})
    for key in drop:
        del contents[key]
    write_v1(path, record, contents)


def write_v1(path, records: dict, arrays: dict) -> None:
    contents = {"meta": np.frombuffer(json.dumps(records).encode(), dtype=np.uint8), **arrays}
    with open(path, "wb") as handle:
        np.savez(handle, **contents)
