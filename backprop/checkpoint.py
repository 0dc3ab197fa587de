"""Checkpoints: one .npz with a format version, the architecture as JSON, the flat parameter
buffer, each layer's state (BatchNorm statistics, dropout step counters) and, optionally, the
optimizer's hyperparameters, step count and state buffers, and its learning-rate schedule
(hyperparameters, base lr, epochs stepped).

Written atomically (a temporary file in the same folder, then a rename), so a crash mid-write
leaves the previous file intact. Read with allow_pickle=False: loading never runs code.
"""

from __future__ import annotations

import json
import os
import secrets

import numpy as np

from backprop.layers import layer_from_config
from backprop.network import Sequential
from backprop.optim import OPTIMIZERS, SCHEDULERS, LRScheduler, Optimizer

FORMAT = "backprop-checkpoint"
FORMAT_VERSION = 1


def _json_array(value) -> np.ndarray:
    return np.frombuffer(json.dumps(value, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def _read_json(array: np.ndarray, what: str):
    try:
        return json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint {what} is not valid JSON ({exc})") from None


def _saved_name(obj, registry: dict, what: str) -> str:
    """The name a checkpoint records `obj`'s class under; TypeError for a class it cannot rebuild
    (a user's own subclass), before anything is written."""
    name = next((name for name, cls in registry.items() if type(obj) is cls), None)
    if name is None:
        known = ", ".join(cls.__name__ for cls in registry.values())
        raise TypeError(f"{what} must be one of {known} to be saved in a checkpoint, got {type(obj).__name__}")
    return name


def save(net: Sequential, path, optimizer: Optimizer | None = None, scheduler: LRScheduler | None = None) -> str:
    """Write `net` (and optionally `optimizer` and its `scheduler`) to `path` (.npz); returns
    the path written."""
    if not isinstance(net, Sequential):
        raise TypeError(f"net must be a Sequential, got {type(net).__name__}")
    if scheduler is not None:
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"scheduler must be a backprop schedule (e.g. bp.StepLR(optimizer, 10)), "
                            f"got {type(scheduler).__name__}")
        if optimizer is None or scheduler.optimizer is not optimizer:
            raise ValueError("scheduler must be saved with its optimizer: save(net, path, optimizer=opt, "
                             "scheduler=sched), where sched was built for opt")
        scheduler_kind = _saved_name(scheduler, SCHEDULERS, "scheduler")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name such as 'model.npz', got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"path must be a file name such as 'model.npz', got {path!r}, which is a folder")
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "architecture": net.config(),
            "num_parameters": net.num_parameters(), "device": net.device,
            "epochs_trained": net.epochs_trained}
    arrays = {"parameters": net.backend.to_host(net.store.data)}
    for i, layer in enumerate(net.layers):
        for key, value in layer.state().items():
            arrays[f"layer{i}.{key}"] = np.asarray(value)
    if optimizer is not None:
        if not isinstance(optimizer, Optimizer) or optimizer.store is not net.store:
            raise ValueError("optimizer must be an optimizer of this network's parameters")
        meta["optimizer"] = {"type": _saved_name(optimizer, OPTIMIZERS, "optimizer"),
                             "hyperparameters": optimizer.hyperparameters(),
                             "step_count": optimizer.step_count, "segments": optimizer.segments}
        for name, value in optimizer.state_arrays().items():
            arrays[f"optimizer.{name}"] = value
    if scheduler is not None:
        meta["scheduler"] = {"type": scheduler_kind, "hyperparameters": scheduler.hyperparameters(),
                             "base_lr": scheduler.base_lr, "epoch": scheduler.epoch}
    arrays["meta"] = _json_array(meta)
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = _create_temporary(folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _create_temporary(folder: str) -> tuple[int, str]:
    """A new file beside the target, created with mode 0o666 less the umask (mkstemp's 0o600
    would make every checkpoint private to its writer once renamed into place)."""
    while True:
        tmp = os.path.join(folder, f".tmp-{secrets.token_hex(8)}.npz")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _open(path) -> tuple[dict, dict]:
    try:
        with np.load(os.fspath(path), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise
    except Exception as exc:  # zipfile and NumPy raise many kinds on damaged bytes; all mean the same
        raise ValueError(f"{path} is not a readable backprop checkpoint ({exc.__class__.__name__}: {exc})") from None
    if "meta" not in arrays:
        raise ValueError(f"{path} is not a backprop checkpoint: it has no 'meta' record")
    meta = _read_json(arrays.pop("meta"), "metadata")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a backprop checkpoint (format {meta.get('format') if isinstance(meta, dict) else meta!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format version {meta.get('version')}; this backprop reads "
                         f"version {FORMAT_VERSION}")
    return meta, arrays


def load(path, device=None, optimizer: bool = False, scheduler: bool = False):
    """Read a checkpoint; returns the network (on `device`, the CPU when None), or
    `(network, optimizer)` when `optimizer=True` (the optimizer is None if none was saved), or
    `(network, optimizer, scheduler)` when `scheduler=True` (the schedule of that optimizer,
    None if none was saved).

    A truncated, corrupted or inconsistent file raises ValueError.
    """
    meta, arrays = _open(path)
    arch = meta.get("architecture")
    try:
        layers = [layer_from_config(c) for c in arch["layers"]]
        net = Sequential(*layers, device="cpu" if device is None else device, dtype=arch["dtype"],
                         seed=arch["seed"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} has an invalid architecture record ({exc})") from None
    params = arrays.get("parameters")
    if params is None or params.shape != (net.num_parameters(),):
        got = None if params is None else params.shape
        raise ValueError(f"{path} holds parameters of shape {got} but its architecture needs "
                         f"({net.num_parameters()},)")
    if not np.isfinite(params).all():
        raise ValueError(f"{path} holds non-finite parameters")
    net.store.data[...] = net.backend.asarray(params)
    for i, layer in enumerate(net.layers):
        prefix = f"layer{i}."
        state = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        expected = layer.state()
        if set(state) != set(expected):
            raise ValueError(f"{path}: layer {i} state has {sorted(state)}, expected {sorted(expected)}")
        for key, value in expected.items():
            if np.shape(state[key]) != np.shape(value):
                raise ValueError(f"{path}: layer {i} state {key!r} has shape {np.shape(state[key])}, "
                                 f"expected {np.shape(value)}")
        layer.load_state(state)
    epochs_trained = meta.get("epochs_trained", 0)
    if isinstance(epochs_trained, bool) or not isinstance(epochs_trained, int) or epochs_trained < 0:
        raise ValueError(f"{path} has an invalid epochs_trained record {epochs_trained!r}")
    net.epochs_trained = epochs_trained
    net.eval()
    if not (optimizer or scheduler):
        return net
    opt = _load_optimizer(path, meta, arrays, net)
    if not scheduler:
        return net, opt
    return net, opt, _load_scheduler(path, meta, opt)


def _load_scheduler(path, meta, opt):
    record = meta.get("scheduler")
    if record is None or opt is None:
        return None
    try:
        sched = SCHEDULERS[record["type"]](opt, **record["hyperparameters"])
        sched.load_state(record["base_lr"], record["epoch"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} has an invalid scheduler record ({exc.__class__.__name__}: {exc})") from None
    return sched


def _load_optimizer(path, meta, arrays, net):
    record = meta.get("optimizer")
    if record is None:
        return None
    try:
        cls = OPTIMIZERS[record["type"]]
        hyper = dict(record["hyperparameters"])
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        opt = cls(net.parameters(), **hyper)
        if [list(s) for s in opt.segments] != [list(s) for s in record["segments"]]:
            raise ValueError("the saved optimizer covered other parameters than the whole network; "
                             "rebuild it and load its state by hand")
        state = {k[len("optimizer."):]: v for k, v in arrays.items() if k.startswith("optimizer.")}
        opt.load_state(record["step_count"], state)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path} has an invalid optimizer record ({exc})") from None
    return opt
