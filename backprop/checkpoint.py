"""Checkpoints: safetensors files that PyTorch and JAX users can open directly.

Format version 2 (what `save` writes): a safetensors file whose tensors are
    layers.{i}.{name}      every parameter (layers.0.weight, layers.0.bias, ...) and every layer
                           buffer (layers.1.running_mean, ...), in the network's dtype
    optimizer.{name}       the optimizer's state (momentum, Adam's moments) over the flat buffer
(every tensor under "layers." is one the architecture declares, every one under "optimizer."
one the optimizer declares: anything else there is refused, never silently dropped), and whose
metadata holds
    format, version        "backprop-checkpoint", "2"
    sha256                 a digest of the records and of every tensor's name, dtype, shape and
                           bytes: safetensors itself has no checksum, and a damaged byte must be
                           refused, never loaded as a quietly different network
    backprop               JSON: the architecture (each layer's config(), dtype, seed, example
                           shape), epochs trained, each layer's counters, and, when saved, the
                           optimizer's and the schedule's records (ReduceLROnPlateau's with
                           its "plateau" state: best value, bad epochs, cooldown counter).
Layers are recorded by their registered names (`@bp.register_layer`), so a user's own layer
round-trips once its class is registered in the loading process. The records also hold, when
given, what the data was (`bp.DataInfo`: the task, the class and feature names, the input
scaling), read back by `load_data_info` and checked, as every record is, by `load` too.

Version 1 (backprop 0.1.0's `.npz`: one flat parameter array, per-layer state arrays, the same
records as a JSON byte array) keeps loading; the reader tells the two apart by their first bytes.

Written atomically (a temporary file in the same folder, then a rename), so a crash mid-write
leaves the previous file intact. A file is hostile input until checked: loading never unpickles
and never runs code from the file; the safetensors header (or each .npy member's header) is
read and checked before any tensor is, the declared architecture's sizes are checked against
the tensors' headers before anything is allocated, and every value loaded is checked (see
`load`); whatever is wrong is a ValueError naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import reprlib
import secrets
import zipfile

import numpy as np

from backprop.backends import resolve_device
from backprop.checks import NotRegisteredError, check_bool, check_int
from backprop.datainfo import DataInfo
from backprop.files import open_regular
from backprop.layers import layer_from_config
from backprop.layers.base import check_registered
from backprop.network import Sequential, declared_network
from backprop.optim import OPTIMIZERS, LRScheduler, Optimizer
from backprop.schedules import SCHEDULERS, ReduceLROnPlateau

FORMAT = "backprop-checkpoint"
FORMAT_VERSION = 2
# The most layers a checkpoint may declare. Loading costs time and memory per declared layer
# whatever the layer holds (a Flatten's record is a few bytes), so a small file could otherwise
# declare millions; real networks stay far below it (a ResNet-152 is about 500 layers here).
MAX_LAYERS = 10_000
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


def _check_save_arguments(net, path, optimizer, scheduler, data_info) -> str:
    if not isinstance(net, Sequential):
        raise TypeError(f"net must be a Sequential, got {type(net).__name__}")
    if len(net.layers) > MAX_LAYERS:
        raise ValueError(f"net has {len(net.layers):,} layers; a checkpoint holds at most {MAX_LAYERS:,} (bp.load "
                         "refuses more)")
    for layer in net.layers:
        check_registered(layer)
    if optimizer is not None:
        if not isinstance(optimizer, Optimizer) or optimizer.store is not net.store:
            raise ValueError("optimizer must be an optimizer of this network's parameters")
        optimizer._check_device()  # built before net.to(): its state is on the old device
        _saved_name(optimizer, OPTIMIZERS, "optimizer")
    if scheduler is not None:
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"scheduler must be a backprop schedule (e.g. bp.StepLR(optimizer, 10)), "
                            f"got {type(scheduler).__name__}")
        if optimizer is None or scheduler.optimizer is not optimizer:
            raise ValueError("scheduler must be saved with its optimizer: save(net, path, optimizer=opt, "
                             "scheduler=sched), where sched was built for opt")
        _saved_name(scheduler, SCHEDULERS, "scheduler")
    if data_info is not None:
        if not isinstance(data_info, DataInfo):
            raise TypeError(f"data_info must be a bp.DataInfo or None, got {type(data_info).__name__}")
        data_info.check_network(net)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name such as 'model.safetensors', got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"path must be a file name such as 'model.safetensors', got {path!r}, which is a folder")
    return path


def save(net: Sequential, path, optimizer: Optimizer | None = None, scheduler: LRScheduler | None = None,
         data_info: DataInfo | None = None) -> str:
    """Write `net` (and optionally `optimizer` and its `scheduler`, and what the data was:
    `data_info`, read back by `load_data_info`) to `path`; returns the path.

    Everything is checked, and every layer's config() recorded, before a byte is written."""
    path = _check_save_arguments(net, path, optimizer, scheduler, data_info)
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    backend = net.backend
    # read as inference: never half an update of another thread's training
    with net.usage.inference(), backend.on_device():
        # "device" is where it was saved, for whoever reads the file; load puts it where asked.
        record = {"architecture": net.config(), "epochs_trained": net.epochs_trained,
                  "counters": net.counter_values(), "device": net.device}
        tensors = {p.name: backend.to_host(p.data) for p in net.parameters()}
        for i, layer in enumerate(net.layers):
            for name, buffer in layer.buffers().items():
                tensors[f"layers.{i}.{name}"] = _loadable_buffer(layer, i, name, backend.to_host(buffer))
        for param in net.parameters():
            if not np.isfinite(tensors[param.name]).all():
                raise ValueError(f"cannot save: parameter {param.name!r} holds NaN or inf, which bp.load refuses")
        if optimizer is not None:
            try:
                optimizer.check_state(optimizer.step_count, optimizer.state_arrays())
            except ValueError as exc:
                raise ValueError(f"cannot save: {exc}, which bp.load refuses") from None
            record["optimizer"] = {"type": _saved_name(optimizer, OPTIMIZERS, "optimizer"),
                                   "hyperparameters": optimizer.hyperparameters(),
                                   "step_count": optimizer.step_count, "segments": optimizer.segments}
            tensors.update({f"optimizer.{name}": value for name, value in optimizer.state_arrays().items()})
    if data_info is not None:
        record["data"] = data_info.to_record()
    if scheduler is not None:
        record["scheduler"] = {"type": _saved_name(scheduler, SCHEDULERS, "scheduler"),
                               "hyperparameters": scheduler.hyperparameters(),
                               "base_lr": scheduler.base_lr, "epoch": scheduler.epoch}
        if isinstance(scheduler, ReduceLROnPlateau):
            record["scheduler"]["plateau"] = scheduler.plateau_state()
    records = json.dumps(record, sort_keys=True)
    metadata = {"format": FORMAT, "version": str(FORMAT_VERSION), "backprop": records,
                "sha256": _digest(records, sorted(tensors), tensors.__getitem__)}
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise NotADirectoryError(f"cannot save to {path!r}: {folder!r} is not a folder")
        raise FileNotFoundError(f"cannot save to {path!r}: the folder {folder!r} does not exist")
    tmp = None
    try:
        tmp = _create_temporary(folder)
        mode = os.stat(tmp).st_mode & 0o777  # 0o666 less the umask; safetensors writes its file 0o600
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, (OSError, SafetensorError)):
            raise _write_error(path, exc) from None
        raise
    return path


def _loadable_buffer(layer, index: int, name: str, values: np.ndarray) -> np.ndarray:
    """`values` of buffer `name` of layer `index`, unless `bp.load` would refuse them (NaN or inf,
    or below what the layer's `check_buffer` allows): then ValueError naming the layer and buffer."""
    what = f"cannot save: buffer {name!r} of layer {index} ({type(layer).__name__})"
    if not np.isfinite(values).all():
        raise ValueError(f"{what} holds NaN or inf, which bp.load refuses")
    try:
        layer.check_buffer(name, values)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}, which bp.load refuses") from None
    return values


def _write_error(path: str, exc: Exception) -> OSError:
    """What failed while writing `path`, as an OSError naming it (PermissionError and the like
    keep their kind): the temporary files, ours and the one safetensors writes before renaming
    it onto ours, are no name the caller knows."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return OSError(exc.errno, f"cannot save to {path!r}: {exc.strerror}")
    reason = re.sub(r' at path "[^"]*"', "", str(exc))  # safetensors' message ends with its temporary file
    return OSError(f"cannot save to {path!r}: {reason}")


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

    A file is hostile input until checked. A truncated, corrupted, foreign or inconsistent file
    raises ValueError naming it, and so does any value training could not use: NaN or inf in a
    tensor, a value a layer's buffer or the optimizer's state can never hold (BatchNorm's
    running variance and Adam's second moments are never negative), a step count that is not a
    non-negative integer, a hyperparameter out of range, a tensor that nothing declares (a
    layer's or the optimizer's), more than MAX_LAYERS layers. Anything but a regular file (a
    folder, a FIFO, a device) is refused before it is read. The records and every tensor's
    header are checked before the network is allocated, so a file costs memory in proportion to
    the data it really holds.
    """
    if device is not None and not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', or None, got "
                        f"{type(device).__name__} {device!r}")
    device = resolve_device("cpu" if device is None else device)  # the caller's mistake, never the file's
    check_bool("optimizer", optimizer)
    check_bool("scheduler", scheduler)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name, got {type(path).__name__} {path!r}")
    with _open_reader(path) as reader:
        net = reader.network(device)
        reader.data_info(net)  # checked as every record is, though only load_data_info returns it
        if not (optimizer or scheduler):
            return net
        opt = reader.optimizer(net)
        if not scheduler:
            return net, opt
        return net, opt, reader.scheduler(opt)


def load_data_info(path) -> DataInfo | None:
    """The `DataInfo` saved with the checkpoint at `path` (None if it was saved without one),
    checked, with the whole file, as `load` checks it."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name, got {type(path).__name__} {path!r}")
    with _open_reader(path) as reader:
        return reader.data_info(reader.network("cpu"))


def _open_reader(path):
    with open_regular(path, os.fspath(path)) as handle:  # never a FIFO's wait or a device's endless bytes
        magic = handle.read(4)
    return (_VersionOne if magic == _ZIP_MAGIC else _VersionTwo)(path)


class CheckpointError(ValueError):
    """A checkpoint refused; the message names the file and what is wrong with it."""


class _Reader:
    """What both format versions share: the records, and the network, optimizer and schedule
    rebuilt from them, every value checked. Subclasses read the file: `record`,
    `tensor_shape(name)`, `tensor(name)`, `check_declared(net)`, `fill(net)`, `close()`."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.record: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        pass

    def invalid(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path} is not a valid backprop checkpoint: {what}")

    def unreadable(self, exc: BaseException) -> CheckpointError:
        return CheckpointError(f"{self.path} is not a readable backprop checkpoint ({_describe(exc)})")

    @contextlib.contextmanager
    def rebuilding(self, what: str):
        """Rebuild something from the records: whatever a malformed record makes the library's
        own checks raise (a value of the wrong JSON type or out of range, a missing key) is
        refused as `what`, naming the file."""
        try:
            yield
        except CheckpointError:
            raise
        except NotRegisteredError as exc:  # the record may be right: this process lacks a registration
            raise CheckpointError(f"{self.path} cannot be loaded in this process: {exc}") from None
        except (KeyError, IndexError, TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise self.invalid(f"{what} ({_describe(exc)})") from None

    def parse_records(self, text: str) -> dict:
        try:
            record = json.loads(text)
        except (ValueError, RecursionError) as exc:  # bad JSON, nesting deeper than the parser goes, huge ints
            raise self.invalid(f"its records are not valid JSON ({exc.__class__.__name__})") from None
        if not isinstance(record, dict):
            raise self.invalid("its records are not a JSON object")
        return record

    # -- the network

    def network(self, device: str) -> Sequential:
        arch = self.record.get("architecture")
        if not isinstance(arch, dict) or not isinstance(arch.get("layers"), list) or not arch["layers"]:
            raise self.invalid("it has no architecture record")
        if len(arch["layers"]) > MAX_LAYERS:
            raise self.invalid(f"it declares {len(arch['layers']):,} layers; backprop loads at most {MAX_LAYERS:,}")
        with self.rebuilding("a layer record is malformed"):
            layers = [layer_from_config(config) for config in arch["layers"]]
        with self.rebuilding("its architecture record is inconsistent"):
            net = declared_network(layers, device, arch.get("dtype"), arch.get("seed"), arch.get("input_shape"))
        with self.rebuilding("an invalid epochs_trained record"):
            epochs = check_int("epochs_trained", self.record.get("epochs_trained", 0), 0,
                               wanted="a non-negative integer")
        self.check_declared(net)  # the declared sizes against the tensors' headers, before allocating
        net._allocate()
        with net.backend.on_device():
            self.fill(net)
        net.epochs_trained = epochs
        net.eval()
        return net

    def refuse_undeclared(self, prefix: str, declared: set, owner: str) -> None:
        """Every tensor named `prefix`... is one `owner` declares: whatever else the file holds
        there would be read by nothing, so it is refused, not silently dropped."""
        extra = sorted(name for name in self.tensor_names() if name.startswith(prefix) and name not in declared)
        if extra:
            raise self.invalid(f"tensor {extra[0]!r} is not declared by {owner} "
                               f"(which declares {_short(sorted(declared))} under {prefix!r})")

    def expect_tensor(self, name: str, shape) -> None:
        got = self.tensor_shape(name)
        if got is None:
            raise self.invalid(f"it has no tensor {name!r}")
        if tuple(got) != tuple(shape):
            raise self.invalid(f"tensor {name!r} has shape {tuple(got)}, but the architecture declares {tuple(shape)}")

    def floats(self, name: str, dtype: str) -> np.ndarray:
        """Tensor `name` in `dtype`; refused unless it holds floating-point numbers."""
        values = self.tensor(name)
        if values.dtype.kind != "f":
            raise self.invalid(f"tensor {name!r} holds {values.dtype} values, not floating-point numbers")
        with np.errstate(over="ignore"):  # what overflows becomes inf, refused by `finite_floats`
            return values.astype(dtype, copy=False)

    def finite_floats(self, name: str, dtype: str) -> np.ndarray:
        """Tensor `name` in `dtype`; refused unless every value is finite there."""
        values = self.floats(name, dtype)
        if not np.isfinite(values).all():
            raise self.invalid(f"tensor {name!r} holds non-finite values (NaN or inf in the network's dtype)")
        return values

    def layer_buffer(self, layer, index: int, key: str, name: str) -> np.ndarray:
        """The values of buffer `name` of layer `index`, from tensor `key`, checked by the layer."""
        values = self.finite_floats(key, layer.backend.dtype_name)
        try:
            layer.check_buffer(name, values)
        except ValueError as exc:
            raise self.invalid(f"tensor {key!r} (layer {index}): {exc}") from None
        return values

    def data_info(self, net) -> DataInfo | None:
        """The data record (None when there is none), checked against `net`."""
        if "data" not in self.record:
            return None
        with self.rebuilding("an invalid data record"):
            info = DataInfo.from_record(self.record["data"])
            info.check_network(net)
        return info

    # -- the optimizer and schedule

    def optimizer(self, net):
        record = self.record.get("optimizer")
        if record is None:
            return None
        with self.rebuilding("an invalid optimizer record"):
            _expect_object(record, "the optimizer record")
            _expect_object(record["hyperparameters"], "its hyperparameters")
            segments = record["segments"]
            opt = OPTIMIZERS[record["type"]](_covered_parameters(net, segments), **record["hyperparameters"])
            if [list(s) for s in opt.segments] != segments:
                raise ValueError(f"its segments {segments} do not fall on the network's parameters")
            state = {}
            for name in opt.state_names:
                key = f"optimizer.{name}"
                self.expect_tensor(key, (net.num_parameters(),))
                state[name] = self.floats(key, net.dtype)
            self.refuse_undeclared("optimizer.", {f"optimizer.{name}" for name in opt.state_names},
                                   f"the optimizer ({record['type']})")
            opt.load_state(record["step_count"], state)
        return opt

    def scheduler(self, opt):
        record = self.record.get("scheduler")
        if record is None or opt is None:
            return None
        with self.rebuilding("an invalid scheduler record"):
            _expect_object(record, "the scheduler record")
            _expect_object(record["hyperparameters"], "its hyperparameters")
            sched = SCHEDULERS[record["type"]](opt, **record["hyperparameters"])
            sched.load_state(record["base_lr"], record["epoch"])
            if isinstance(sched, ReduceLROnPlateau):
                sched.load_plateau_state(record["plateau"])
        return sched


def _expect_object(value, what: str) -> None:
    if not isinstance(value, dict):
        raise TypeError(f"{what} is {_short(value)}, not a JSON object")


def _covered_parameters(net: Sequential, segments) -> list:
    """The network's parameters inside the saved segments ([start, stop) ranges of the flat
    buffer): all of them for an optimizer of the whole network, some for one of a few layers."""
    pairs = isinstance(segments, list) and segments and all(
        isinstance(s, list) and len(s) == 2 and all(type(v) is int for v in s) for s in segments)
    if not pairs:
        raise ValueError(f"segments must be a non-empty list of [start, stop] pairs, got {segments!r}")
    covered = [p for p in net.parameters() if any(a <= p.offset and p.offset + p.size <= b for a, b in segments)]
    if not covered:
        raise ValueError(f"its segments {segments} hold none of the network's parameters")
    return covered


def _describe(exc: BaseException, limit: int = 300) -> str:
    """"KeyError: 'type'": an exception in one line short enough to read, whatever a file held."""
    text = " ".join(f"{exc.__class__.__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit] + "..."


def _short(value) -> str:
    """A value from a file, shown briefly: reprlib cuts long and deeply nested ones short."""
    return reprlib.repr(value)


class _VersionTwo(_Reader):
    """The safetensors file: header and metadata first, tensors read one at a time when needed."""

    def __init__(self, path):
        super().__init__(path)
        from safetensors import safe_open

        try:
            self._file = safe_open(self.path, framework="numpy")
            self._handle = self._file.__enter__()
        except Exception as exc:  # safetensors raises its own error kinds on damaged bytes
            raise self.unreadable(exc) from None
        try:
            self._read_records()
        except BaseException:
            self.close()
            raise

    def _read_records(self) -> None:
        try:
            metadata = self._handle.metadata() or {}
            self._keys = set(self._handle.keys())
        except Exception as exc:
            raise self.unreadable(exc) from None
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"{self.path} is not a backprop checkpoint (format {metadata.get('format')!r})")
        if metadata.get("version") != str(FORMAT_VERSION):
            raise CheckpointError(f"{self.path} has checkpoint format version {metadata.get('version')}; this backprop "
                           f"reads versions 1 and {FORMAT_VERSION}")
        records = metadata.get("backprop", "")
        try:
            digest = _digest(records, sorted(self._keys), self.tensor)
        except Exception as exc:  # a tensor the header promises but the file does not hold
            raise self.unreadable(exc) from None
        if digest != metadata.get("sha256"):
            raise CheckpointError(f"{self.path} is damaged: its contents do not match the checksum it was saved with")
        self.record = self.parse_records(records)

    def close(self) -> None:
        self._file.__exit__(None, None, None)

    def tensor_shape(self, name: str):
        return self._handle.get_slice(name).get_shape() if name in self._keys else None

    def tensor(self, name: str) -> np.ndarray:
        return self._handle.get_tensor(name)

    def check_declared(self, net) -> None:
        for param in net.parameters():
            self.expect_tensor(param.name, param.shape)
        for i, layer in enumerate(net.layers):
            for name, (shape, *_) in layer._buffer_specs.items():
                self.expect_tensor(f"layers.{i}.{name}", shape)
        self.refuse_undeclared("layers.", {param.name for param in net.parameters()} | {
            f"layers.{i}.{name}" for i, layer in enumerate(net.layers) for name in layer._buffer_specs},
            "the architecture")

    def tensor_names(self):
        return self._keys

    def fill(self, net) -> None:
        backend = net.backend
        for param in net.parameters():
            param.data = self.finite_floats(param.name, net.dtype)
        counters = self.record.get("counters", [{}] * len(net.layers))
        if not isinstance(counters, list) or len(counters) != len(net.layers):
            raise self.invalid("its counters record does not match the layers")
        for i, layer in enumerate(net.layers):
            for name, buffer in layer.buffers().items():
                buffer[...] = backend.asarray(self.layer_buffer(layer, i, f"layers.{i}.{name}", name))
            _load_counters(self, layer, i, counters[i])


class _VersionOne(_Reader):
    """backprop 0.1.0's .npz: a zip archive of .npy members, stored uncompressed (np.savez).

    Every member's .npy header is read and checked against the archive when the file is opened
    (objects refused, sizes matching the bytes really there); arrays are read only when needed,
    the records first."""

    def __init__(self, path):
        super().__init__(path)
        self._zip = None
        try:
            self._zip = zipfile.ZipFile(self.path)
            size = os.path.getsize(self.path)
            self._members = {}
            for info in self._zip.infolist():
                if info.filename.endswith(".npy"):
                    self._members[info.filename[:-4]] = self._header(info, size)
            if "meta" not in self._members:
                raise CheckpointError(f"{self.path} is not a backprop checkpoint: it has no 'meta' record")
            meta = self.tensor("meta")
            self._read_records(meta)
        except CheckpointError:
            self.close()
            raise
        except Exception as exc:  # zipfile and NumPy raise many kinds on damaged bytes; all mean the same
            self.close()
            raise self.unreadable(exc) from None

    def _header(self, info: zipfile.ZipInfo, file_size: int) -> tuple:
        """(info, shape, dtype) of one member, from its .npy header, checked against the archive."""
        name = info.filename
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise self.invalid(f"member {name!r} is compressed, which backprop's .npz checkpoints never are")
        if info.header_offset + info.compress_size > file_size:
            raise self.invalid(f"member {name!r} reaches past the end of the file")
        with self._zip.open(info) as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise self.invalid(f"member {name!r} is a .npy file of version {version}")
            if dtype.hasobject:
                raise CheckpointError(f"{self.path} is not a readable backprop checkpoint (it holds Python objects, "
                               "which backprop never unpickles)")
            data_bytes = math.prod(shape) * dtype.itemsize
            if handle.tell() + data_bytes != info.file_size:
                raise self.invalid(f"member {name!r} declares shape {shape} of {dtype} ({data_bytes} bytes), "
                                   f"but holds {info.file_size - handle.tell()} bytes")
        return info, shape, dtype

    def _read_records(self, meta: np.ndarray) -> None:
        try:
            text = meta.tobytes().decode("utf-8")
        except UnicodeDecodeError:
            raise self.invalid("its records are not valid JSON (UnicodeDecodeError)") from None
        record = self.parse_records(text)
        if record.get("format") != FORMAT:
            raise CheckpointError(f"{self.path} is not a backprop checkpoint")
        if record.get("version") != 1:
            raise CheckpointError(f"{self.path} has checkpoint format version {record.get('version')}; this backprop "
                           f"reads versions 1 and {FORMAT_VERSION}")
        self.record = record  # the same records as version 2's, optimizer state as "optimizer.<name>" arrays

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def tensor_shape(self, name: str):
        return self._members[name][1] if name in self._members else None

    def tensor_names(self):
        return self._members

    def tensor(self, name: str) -> np.ndarray:
        with self._zip.open(self._members[name][0]) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)

    def check_declared(self, net) -> None:
        self.expect_tensor("parameters", (net.num_parameters(),))
        for i, layer in enumerate(net.layers):
            names = {name[len(f"layer{i}."):] for name in self._members if name.startswith(f"layer{i}.")}
            expected = set(layer._buffer_specs) | set(layer.counters)
            if names != expected:
                raise self.invalid(f"layer {i} state has {sorted(names)}, expected {sorted(expected)}")
            for name, (shape, *_) in layer._buffer_specs.items():
                self.expect_tensor(f"layer{i}.{name}", shape)
            for name in layer.counters:
                self.expect_tensor(f"layer{i}.{name}", ())
        self.refuse_undeclared("layer", {f"layer{i}.{name}" for i, layer in enumerate(net.layers)
                                         for name in (*layer._buffer_specs, *layer.counters)}, "the architecture")

    def fill(self, net) -> None:
        backend = net.backend
        net.store.data[...] = backend.asarray(self.finite_floats("parameters", net.dtype))
        for i, layer in enumerate(net.layers):
            for name, buffer in layer.buffers().items():
                buffer[...] = backend.asarray(self.layer_buffer(layer, i, f"layer{i}.{name}", name))
            _load_counters(self, layer, i, {name: self.tensor(f"layer{i}.{name}") for name in layer.counters})


def _load_counters(reader: _Reader, layer, index: int, values) -> None:
    """A layer's counters from the file: each a non-negative integer."""
    if not isinstance(values, dict) or set(values) != set(layer.counters):
        raise reader.invalid(f"layer {index}'s counters are {_short(values)}, expected {list(layer.counters)}")
    checked = {}
    for name, value in values.items():
        value = value.item() if isinstance(value, np.ndarray) and value.shape == () else value
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
            raise reader.invalid(f"layer {index}'s counter {name!r} is {_short(value)}, not a non-negative integer")
        checked[name] = int(value)
    layer.set_counters(checked)
