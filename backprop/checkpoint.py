"""Checkpoints: safetensors files that PyTorch and JAX users can open directly.

Format version 2 (what `save` writes): a safetensors file whose tensors are
    layers.{i}.{name}      every parameter (layers.0.weight, layers.0.bias, ...) and every layer
                           buffer (layers.1.running_mean, ...), in the network's dtype
    optimizer.{name}       the optimizer's state (momentum, Adam's moments) over the flat buffer
and whose metadata holds
    format, version        "backprop-checkpoint", "2"
    sha256                 a digest of the records and of every tensor's name, dtype, shape and
                           bytes: safetensors itself has no checksum, and a damaged byte must be
                           refused, never loaded as a quietly different network
    backprop               JSON: the architecture (each layer's config(), dtype, seed, example
                           shape), epochs trained, each layer's counters, and, when saved, the
                           optimizer's and the schedule's records.
Layers are recorded by their registered names (`@bp.register_layer`), so a user's own layer
round-trips once its class is registered in the loading process.

Version 1 (backprop 0.1.0's `.npz`: one flat parameter array, per-layer state arrays, the same
records as a JSON byte array) keeps loading; the reader tells the two apart by their first bytes.

Written atomically (a temporary file in the same folder, then a rename), so a crash mid-write
leaves the previous file intact. Loading never unpickles and never runs code from the file: the
safetensors header is read and checked before any tensor is, and the declared architecture's
sizes are checked against the tensors' headers before anything is allocated.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets

import numpy as np

from backprop.layers import layer_from_config
from backprop.network import Sequential, declared_network
from backprop.optim import OPTIMIZERS, SCHEDULERS, LRScheduler, Optimizer

FORMAT = "backprop-checkpoint"
FORMAT_VERSION = 2
_ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of an .npz (a zip archive): format version 1


# ---------------------------------------------------------------------- save


def _saved_name(obj, registry: dict, what: str) -> str:
    """The name a checkpoint records `obj`'s class under; TypeError for a class it cannot rebuild
    (a user's own subclass), before anything is written."""
    name = next((name for name, cls in registry.items() if type(obj) is cls), None)
    if name is None:
        known = ", ".join(cls.__name__ for cls in registry.values())
        raise TypeError(f"{what} must be one of {known} to be saved in a checkpoint, got {type(obj).__name__}")
    return name


def _check_save_arguments(net, path, optimizer, scheduler) -> str:
    if not isinstance(net, Sequential):
        raise TypeError(f"net must be a Sequential, got {type(net).__name__}")
    if optimizer is not None:
        if not isinstance(optimizer, Optimizer) or optimizer.store is not net.store:
            raise ValueError("optimizer must be an optimizer of this network's parameters")
        _saved_name(optimizer, OPTIMIZERS, "optimizer")
    if scheduler is not None:
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"scheduler must be a backprop schedule (e.g. bp.StepLR(optimizer, 10)), "
                            f"got {type(scheduler).__name__}")
        if optimizer is None or scheduler.optimizer is not optimizer:
            raise ValueError("scheduler must be saved with its optimizer: save(net, path, optimizer=opt, "
                             "scheduler=sched), where sched was built for opt")
        _saved_name(scheduler, SCHEDULERS, "scheduler")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name such as 'model.safetensors', got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"path must be a file name such as 'model.safetensors', got {path!r}, which is a folder")
    return path


def save(net: Sequential, path, optimizer: Optimizer | None = None, scheduler: LRScheduler | None = None) -> str:
    """Write `net` (and optionally `optimizer` and its `scheduler`) to `path`; returns the path.

    Everything is checked, and every layer's config() recorded, before a byte is written."""
    path = _check_save_arguments(net, path, optimizer, scheduler)
    from safetensors.numpy import save_file

    backend = net.backend
    record = {"architecture": net.config(), "epochs_trained": net.epochs_trained,
              "counters": net.counter_values(), "device": net.device}
    with backend.on_device():
        tensors = {p.name: backend.to_host(p.data) for p in net.parameters()}
        for i, layer in enumerate(net.layers):
            for name, buffer in layer.buffers().items():
                tensors[f"layers.{i}.{name}"] = backend.to_host(buffer)
        if optimizer is not None:
            record["optimizer"] = {"type": _saved_name(optimizer, OPTIMIZERS, "optimizer"),
                                   "hyperparameters": optimizer.hyperparameters(),
                                   "step_count": optimizer.step_count, "segments": optimizer.segments}
            tensors.update({f"optimizer.{name}": value for name, value in optimizer.state_arrays().items()})
    if scheduler is not None:
        record["scheduler"] = {"type": _saved_name(scheduler, SCHEDULERS, "scheduler"),
                               "hyperparameters": scheduler.hyperparameters(),
                               "base_lr": scheduler.base_lr, "epoch": scheduler.epoch}
    records = json.dumps(record, sort_keys=True)
    metadata = {"format": FORMAT, "version": str(FORMAT_VERSION), "backprop": records,
                "sha256": _digest(records, sorted(tensors), tensors.__getitem__)}
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save to {path!r}: the folder {folder!r} does not exist")
    tmp = _create_temporary(folder)
    mode = os.stat(tmp).st_mode & 0o777  # 0o666 less the umask; safetensors writes its file 0o600
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _digest(records: str, names, tensor) -> str:
    """sha256 of the records and of each tensor (name, dtype, shape, bytes), in `names` order."""
    digest = hashlib.sha256(records.encode("utf-8"))
    for name in names:
        values = np.ascontiguousarray(tensor(name))
        digest.update(f"\0{name}\0{values.dtype.str}\0{values.shape}\0".encode("utf-8"))
        digest.update(values.tobytes())
    return digest.hexdigest()


def _create_temporary(folder: str) -> str:
    """A new empty file beside the target, created with mode 0o666 less the umask (mkstemp's
    0o600 would make every checkpoint private to its writer once renamed into place)."""
    while True:
        tmp = os.path.join(folder, f".tmp-{secrets.token_hex(8)}.safetensors")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


# ---------------------------------------------------------------------- load


def load(path, device=None, optimizer: bool = False, scheduler: bool = False):
    """Read a checkpoint; returns the network (on `device`, the CPU when None), or
    `(network, optimizer)` when `optimizer=True` (the optimizer is None if none was saved), or
    `(network, optimizer, scheduler)` when `scheduler=True` (the schedule of that optimizer,
    None if none was saved).

    A truncated, corrupted, foreign or inconsistent file raises ValueError naming it.
    """
    if device is not None and not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', or None, got "
                        f"{type(device).__name__} {device!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name, got {type(path).__name__} {path!r}")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    reader = _VersionOne(path) if magic == _ZIP_MAGIC else _VersionTwo(path)
    with reader:
        net = reader.network("cpu" if device is None else device)
        if not (optimizer or scheduler):
            return net
        opt = reader.optimizer(net)
        if not scheduler:
            return net, opt
        return net, opt, reader.scheduler(opt)


class _Reader:
    """What both format versions share: the records, and the network, optimizer and schedule
    rebuilt from them. Subclasses read the file: `record`, `tensor_shape(name)`, `tensor(name)`."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.record: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def invalid(self, what: str) -> ValueError:
        return ValueError(f"{self.path} is not a valid backprop checkpoint: {what}")

    # -- the network

    def layers(self) -> list:
        arch = self.record.get("architecture")
        if not isinstance(arch, dict) or not isinstance(arch.get("layers"), list):
            raise self.invalid("it has no architecture record")
        try:
            return [layer_from_config(config) for config in arch["layers"]]
        except (TypeError, ValueError) as exc:
            raise self.invalid(f"a layer record is malformed ({exc})") from None

    def network(self, device) -> Sequential:
        arch = self.record.get("architecture", {})
        layers = self.layers()
        try:
            net = declared_network(layers, device, arch.get("dtype"), arch.get("seed"), arch.get("input_shape"))
        except (TypeError, ValueError, KeyError) as exc:
            if type(exc).__name__ == "DeviceUnavailableError":
                raise
            raise self.invalid(f"its architecture record is inconsistent ({exc})") from None
        self.check_declared(net)
        net._allocate()
        with net.backend.on_device():
            self.fill(net)
        epochs = self.record.get("epochs_trained", 0)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise self.invalid(f"an invalid epochs_trained record {epochs!r}")
        net.epochs_trained = epochs
        net.eval()
        return net

    def expect_tensor(self, name: str, shape) -> None:
        got = self.tensor_shape(name)
        if got is None:
            raise self.invalid(f"it has no tensor {name!r}")
        if tuple(got) != tuple(shape):
            raise self.invalid(f"tensor {name!r} has shape {tuple(got)}, but the architecture declares {tuple(shape)}")

    def finite(self, name: str, values: np.ndarray) -> np.ndarray:
        if values.dtype.kind != "f" or not np.isfinite(values).all():
            raise self.invalid(f"tensor {name!r} holds non-finite or non-numeric values")
        return values

    # -- the optimizer and schedule

    def optimizer(self, net):
        record = self.record.get("optimizer")
        if record is None:
            return None
        try:
            cls = OPTIMIZERS[record["type"]]
            hyper = dict(record["hyperparameters"])
            if "betas" in hyper:
                hyper["betas"] = tuple(hyper["betas"])
            opt = cls(net.parameters(), **hyper)
            if [list(s) for s in opt.segments] != [list(s) for s in record["segments"]]:
                raise self.invalid("the saved optimizer covered other parameters than the whole network; "
                                   "rebuild it and load its state by hand")
            state = {}
            for name in opt.state_names:
                key = f"optimizer.{name}"
                self.expect_tensor(key, (net.num_parameters(),))
                state[name] = self.finite(key, self.tensor(key))
            opt.load_state(record["step_count"], state)
        except (KeyError, TypeError) as exc:
            raise self.invalid(f"an invalid optimizer record ({exc.__class__.__name__}: {exc})") from None
        return opt

    def scheduler(self, opt):
        record = self.record.get("scheduler")
        if record is None or opt is None:
            return None
        try:
            sched = SCHEDULERS[record["type"]](opt, **record["hyperparameters"])
            sched.load_state(record["base_lr"], record["epoch"])
        except (KeyError, TypeError, ValueError) as exc:
            raise self.invalid(f"an invalid scheduler record ({exc.__class__.__name__}: {exc})") from None
        return sched


class _VersionTwo(_Reader):
    """The safetensors file: header and metadata first, tensors read one at a time when needed."""

    def __init__(self, path):
        super().__init__(path)
        from safetensors import safe_open

        try:
            self._file = safe_open(self.path, framework="numpy")
            self._handle = self._file.__enter__()
            metadata = self._handle.metadata() or {}
            self._keys = set(self._handle.keys())
        except Exception as exc:  # safetensors raises its own error kinds on damaged bytes
            raise ValueError(f"{self.path} is not a readable backprop checkpoint "
                             f"({exc.__class__.__name__}: {exc})") from None
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not a backprop checkpoint (format {metadata.get('format')!r})")
        if metadata.get("version") != str(FORMAT_VERSION):
            raise ValueError(f"{self.path} has checkpoint format version {metadata.get('version')}; this backprop "
                             f"reads versions 1 and {FORMAT_VERSION}")
        records = metadata.get("backprop", "")
        try:
            digest = _digest(records, sorted(self._keys), self.tensor)
        except Exception as exc:  # a tensor the header promises but the file does not hold
            raise ValueError(f"{self.path} is not a readable backprop checkpoint "
                             f"({exc.__class__.__name__}: {exc})") from None
        if digest != metadata.get("sha256"):
            raise ValueError(f"{self.path} is damaged: its contents do not match the checksum it was saved with")
        try:
            self.record = json.loads(records)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise self.invalid(f"its records are not valid JSON ({exc.__class__.__name__})") from None
        if not isinstance(self.record, dict):
            raise self.invalid("its records are not a JSON object")

    def __exit__(self, *exc):
        self._file.__exit__(*exc)
        return False

    def tensor_shape(self, name: str):
        return self._handle.get_slice(name).get_shape() if name in self._keys else None

    def tensor(self, name: str) -> np.ndarray:
        return self._handle.get_tensor(name)

    def check_declared(self, net) -> None:
        for param in net.parameters():
            self.expect_tensor(param.name, param.shape)
        for i, layer in enumerate(net.layers):
            for name, (shape, _) in layer._buffer_specs.items():
                self.expect_tensor(f"layers.{i}.{name}", shape)

    def fill(self, net) -> None:
        backend = net.backend
        for param in net.parameters():
            param.data = self.finite(param.name, self.tensor(param.name))
        counters = self.record.get("counters", [{}] * len(net.layers))
        if not isinstance(counters, list) or len(counters) != len(net.layers):
            raise self.invalid("its counters record does not match the layers")
        for i, layer in enumerate(net.layers):
            for name, buffer in layer.buffers().items():
                key = f"layers.{i}.{name}"
                buffer[...] = backend.asarray(self.finite(key, self.tensor(key)))
            _load_counters(self, layer, i, counters[i])


class _VersionOne(_Reader):
    """backprop 0.1.0's .npz: read whole (its arrays are small and it holds no pickles)."""

    def __init__(self, path):
        super().__init__(path)
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                self._arrays = {key: npz[key] for key in npz.files}
        except Exception as exc:  # zipfile and NumPy raise many kinds on damaged bytes; all mean the same
            why = ("it holds Python objects, which backprop never unpickles" if "allow_pickle" in str(exc)
                   else f"{exc.__class__.__name__}: {exc}")
            raise ValueError(f"{self.path} is not a readable backprop checkpoint ({why})") from None
        if "meta" not in self._arrays:
            raise ValueError(f"{self.path} is not a backprop checkpoint: it has no 'meta' record")
        try:
            meta = json.loads(self._arrays.pop("meta").tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise self.invalid(f"its metadata is not valid JSON ({exc.__class__.__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not a backprop checkpoint")
        if meta.get("version") != 1:
            raise ValueError(f"{self.path} has checkpoint format version {meta.get('version')}; this backprop "
                             f"reads versions 1 and {FORMAT_VERSION}")
        self.record = meta  # the same records as version 2's, optimizer state as "optimizer.<name>" arrays

    def tensor_shape(self, name: str):
        return self._arrays[name].shape if name in self._arrays else None

    def tensor(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def check_declared(self, net) -> None:
        self.expect_tensor("parameters", (net.num_parameters(),))

    def fill(self, net) -> None:
        backend = net.backend
        net.store.data[...] = backend.asarray(self.finite("parameters", self.tensor("parameters")))
        for i, layer in enumerate(net.layers):
            prefix = f"layer{i}."
            state = {k[len(prefix):]: v for k, v in self._arrays.items() if k.startswith(prefix)}
            expected = set(layer._buffer_specs) | set(layer.counters)
            if set(state) != expected:
                raise self.invalid(f"layer {i} state has {sorted(state)}, expected {sorted(expected)}")
            for name, buffer in layer.buffers().items():
                if state[name].shape != buffer.shape:
                    raise self.invalid(f"layer {i} state {name!r} has shape {state[name].shape}, "
                                       f"expected {buffer.shape}")
                buffer[...] = backend.asarray(self.finite(f"layer{i}.{name}", state[name]))
            _load_counters(self, layer, i, {name: state[name] for name in layer.counters})


def _load_counters(reader: _Reader, layer, index: int, values) -> None:
    """A layer's counters from the file: each a non-negative integer."""
    if not isinstance(values, dict) or set(values) != set(layer.counters):
        raise reader.invalid(f"layer {index}'s counters are {values!r}, expected {list(layer.counters)}")
    checked = {}
    for name, value in values.items():
        value = value.item() if isinstance(value, np.ndarray) and value.shape == () else value
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
            raise reader.invalid(f"layer {index}'s counter {name!r} is {value!r}, not a non-negative integer")
        checked[name] = int(value)
    layer.set_counters(checked)
