"""The data sets of `python -m backprop train --dataset NAME`, split for training.

    digits       scikit-learn's bundled 8x8 handwritten digits (1797 images, no download)
    xor          two classes on the quadrants of a square: label = (x1 > 0) xor (x2 > 0)
    moons        two interleaving half circles
    circles      a ring around a disc
    idx:PATH     MNIST-format IDX files: a folder holding *train-images* / *train-labels*
                 (and optionally *t10k-* or *test-* files as the test set), or IMAGES,LABELS
    npz:PATH     a NumPy .npz with arrays X (samples, features...) and y (labels, or regression
                 targets)
    csv:PATH     a CSV file with a header row (backprop.apps.tabular)

Every set comes back as a `Dataset`: features as float rows, labels as class indices
0..k-1 (the original label values kept in `class_names`), split stratified into train,
validation and test parts (`data.stratified_split`). The toy sets are drawn on the spot from
`seed`. Sets of images keep the shape of one image, (channels, height, width), in
`image_shape`, and `as_images()` gives their rows back as image batches (for a CNN).
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import math
import os
import zipfile
import zlib

import numpy as np

from backprop.apps.data import load_digits_split, stratified_split
from backprop.apps.tabular import describe_task, infer_task, read_csv, regression_targets, standardisation
from backprop.datainfo import DataInfo
from backprop.files import open_regular

TOY_SAMPLES = 1000
VAL_FRACTION, TEST_FRACTION = 0.1, 0.2
NAMES = ("digits", "xor", "moons", "circles", "idx:PATH", "npz:PATH", "csv:PATH")


@dataclasses.dataclass
class Dataset:
    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    image_shape: tuple[int, int, int] | None = None  # (channels, height, width) of a set of images
    info: DataInfo | None = None  # the task, names and scaling `train` saves with the model
    task_note: str = "classification"  # the task, as the run's summary says it

    def __post_init__(self):
        if self.info is None:  # a classification set: its class names are what the model keeps
            self.info = DataInfo(task="classification", class_names=self.class_names)

    @property
    def features(self) -> int:
        return math.prod(self.X_train.shape[1:])

    def describe_examples(self) -> str:
        """"64 features", or "images of 1x8x8" once laid out as images."""
        if self.X_train.ndim > 2:
            return "images of " + "x".join(map(str, self.X_train.shape[1:]))
        return f"{self.features} features"

    def as_images(self) -> "Dataset":
        """The same split with every X as a batch of images (rows, channels, height, width): views."""
        if self.image_shape is None:
            raise ValueError(f"{self.name} is not a set of images: its samples are rows of {self.features} features")
        shaped = {name: getattr(self, name).reshape(-1, *self.image_shape) for name in ("X_train", "X_val", "X_test")}
        return dataclasses.replace(self, **shaped)

    @property
    def classes(self) -> int:
        return len(self.class_names)

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def outputs(self) -> int:
        """The network's outputs: one per class, or one per regression target."""
        if self.task == "classification":
            return self.classes
        return 1 if self.y_train.ndim == 1 else self.y_train.shape[1]


# ---------------------------------------------------------------------- toy sets


def make_xor(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x uniform on [-1, 1]^2; class 1 where exactly one coordinate is positive."""
    X = rng.uniform(-1.0, 1.0, size=(n, 2))
    return X, ((X[:, 0] > 0) != (X[:, 1] > 0)).astype(np.int64)


def make_moons(n: int, rng: np.random.Generator, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Upper half circle (cos t, sin t) as class 0, the lower one (1 - cos t, 0.5 - sin t) as
    class 1, t uniform on [0, pi], plus Gaussian noise (scikit-learn's make_moons shape)."""
    y = rng.permutation(np.arange(n) % 2)
    t = rng.uniform(0.0, np.pi, size=n)
    X = np.where(y[:, None] == 0, np.c_[np.cos(t), np.sin(t)], np.c_[1.0 - np.cos(t), 0.5 - np.sin(t)])
    return X + rng.normal(0.0, noise, size=X.shape), y


def make_circles(n: int, rng: np.random.Generator, noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 on the circle of radius 1, class 1 on the circle of radius 0.5, plus noise."""
    y = rng.permutation(np.arange(n) % 2)
    t = rng.uniform(0.0, 2.0 * np.pi, size=n)
    radius = np.where(y == 0, 1.0, 0.5)
    X = radius[:, None] * np.c_[np.cos(t), np.sin(t)]
    return X + rng.normal(0.0, noise, size=X.shape), y


TOYS = {"xor": make_xor, "moons": make_moons, "circles": make_circles}


# ---------------------------------------------------------------------- files

# IDX type codes (the third byte of the magic number) and their big-endian dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """An IDX file (MNIST's format, optionally gzipped): magic 0 0 type ndim, ndim big-endian
    uint32 sizes, then the values big-endian in C order."""
    try:
        with open_regular(path, f"idx: {path}") as file, (gzip.open(file) if path.endswith(".gz") else file) as handle:
            raw = handle.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # truncated or not gzip at all
        raise ValueError(f"{path} is not a readable gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (it does not start with the IDX magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: the IDX header promises {ndim} sizes but the file ends after {len(raw)} bytes")
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">u4")) if ndim else ()
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: sizes of 2**31 do not wrap
    if len(raw) != expected:
        raise ValueError(f"{path}: the IDX header promises shape {shape} ({expected} bytes) but the file "
                         f"has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _idx_pairs(path: str) -> list[tuple[str, str]]:
    """[(train images, train labels)] plus (test images, test labels) when present."""
    if "," in path:
        images, labels = path.split(",", 1)
        return [(images, labels)]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"idx:{path}: not a folder; give a folder holding *train-images* and "
                                f"*train-labels* IDX files, or idx:IMAGES,LABELS")

    def find(*patterns: str) -> str | None:
        hits = sorted(h for p in patterns for h in glob.glob(os.path.join(path, p)))
        return hits[0] if hits else None

    pairs = []
    for part in ("train", "t10k", "test"):
        images, labels = find(f"*{part}-images*"), find(f"*{part}-labels*")
        if images and labels and (part == "train" or len(pairs) == 1):
            pairs.append((images, labels))
    if not pairs:
        raise FileNotFoundError(f"idx:{path}: no *train-images* and *train-labels* IDX files in that folder")
    return pairs


def _image_shape(X: np.ndarray) -> tuple[int, int, int] | None:
    """(channels, height, width) of the samples of X: (n, h, w) is one channel, (n, c, h, w) as
    it is; None for rows of features."""
    if X.ndim == 3:
        return (1, *X.shape[1:])
    return tuple(X.shape[1:]) if X.ndim == 4 else None


def _features(X: np.ndarray, source: str) -> np.ndarray:
    """Rows of float features: images flattened, 8-bit pixels scaled to [0, 1] in float32 (half the
    memory of float64 for MNIST's 47 million pixels; the network converts to its dtype anyway)."""
    if X.ndim < 2 or X.shape[0] == 0:
        raise ValueError(f"{source}: expected samples x features (or images), got shape {X.shape}")
    flat = X.reshape(X.shape[0], -1)
    if flat.dtype == np.uint8:
        return flat.astype(np.float32) / np.float32(255.0)
    if flat.dtype.kind not in "iuf":
        raise ValueError(f"{source}: features must be numbers, got dtype {flat.dtype}")
    flat = flat.astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise ValueError(f"{source}: features hold NaN or inf")
    return flat


def _labels(y: np.ndarray, rows: int, source: str) -> np.ndarray:
    """The class labels as given (whole numbers of any integer or float type; `_as_classes`
    maps them to 0..k-1 and keeps their values as the class names)."""
    y = np.asarray(y).reshape(-1) if np.ndim(y) == 2 and np.shape(y)[1] == 1 else np.asarray(y)
    if y.ndim != 1 or y.shape[0] != rows:
        raise ValueError(f"{source}: expected {rows} labels in a 1-D array, got shape {y.shape}")
    whole = y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    if not whole:
        raise ValueError(f"{source}: labels must be whole numbers (class labels), got dtype {y.dtype}")
    return y


# The first bytes of a zip archive (an .npz), and of an empty one.
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def _read_npz(path: str, need_y: bool = True) -> tuple[np.ndarray, np.ndarray | None, tuple | None]:
    """(X as rows (as `_features`), y as stored (None when not `need_y` and the file holds none),
    the shape of one image or None)."""
    source = f"npz:{path}"
    with open_regular(path, source) as handle:
        if handle.read(4) not in ZIP_MAGICS:  # np.load would try it as a pickle and suggest allow_pickle=
            raise ValueError(f"{source} is not an .npz file (a zip archive of arrays, as np.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("X", "y")[:2 if need_y else 1] if k not in data.files]
            if missing:
                raise ValueError(f"{source} has no array {missing[0]!r} (it holds {', '.join(data.files) or 'nothing'}); "
                                 "it needs X (samples, features) and y (labels)")
            X, y = data["X"], data["y"] if "y" in data.files else None
            shape = _image_shape(X)
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise ValueError(f"{source} holds Python objects, which backprop never unpickles; save numeric arrays "
                         "(np.savez(path, X=X.astype(float), y=y))") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # damaged or truncated archive
        raise ValueError(f"{source} is not a readable .npz file ({exc.__class__.__name__}: {exc})") from None
    return _features(X, f"{source} X"), y, shape


# ---------------------------------------------------------------------- splitting and naming


def _split(name, X, y, seed, class_names, image_shape=None) -> Dataset:
    test, val, train = _split_parts(name, y, {"test": TEST_FRACTION, "validation": VAL_FRACTION}, seed)
    return Dataset(name, X[train], y[train], X[val], y[val], X[test], y[test], class_names, image_shape)


def _split_parts(name: str, y: np.ndarray, fractions: dict[str, float], seed: int) -> list[np.ndarray]:
    """stratified_split into the named fractions and the training rest; a set too small for
    every part to get a sample is refused, saying so."""
    parts = stratified_split(y, tuple(fractions.values()), seed)
    shares = {**fractions, "training": 1.0 - sum(fractions.values())}
    empty = [part for part, indices in zip(shares, parts) if len(indices) == 0]
    if empty:
        split = ", ".join(f"{part} ({round(100 * shares[part])} %)" for part in reversed(shares))
        raise ValueError(f"{name} has {len(y)} samples, too few to split class by class into {split}: "
                         f"the {' and '.join(empty)} set{'s' if len(empty) > 1 else ''} would be empty; "
                         "use a larger data set")
    return parts


def labelled_dataset(name: str, X: np.ndarray, y: np.ndarray, seed: int, task: str | None, *,
                     scale_features: bool = False, feature_names=None, target_name=None,
                     image_shape=None) -> Dataset:
    """X and y split for `task` (inferred from y when None): stratified by class for a
    classification (text labels are the class names), at random for a regression, whose targets
    are standardised; the features too when `scale_features`. The scaling comes from the
    training part alone and is the data set's `info`. `image_shape` (C, H, W) keeps a set of
    images usable by a CNN."""
    inferred = task or infer_task(y)
    fractions = {"test": TEST_FRACTION, "validation": VAL_FRACTION}
    if inferred == "classification":
        if y.dtype.kind in "US":  # text labels: the class names, in sorted order
            class_names, y = [str(v) for v in np.unique(y)], np.unique(y, return_inverse=True)[1]
            if len(class_names) < 2:
                raise ValueError(f"{name}: the labels hold one class ({class_names[0]}); a classifier needs at "
                                 "least two")
        else:
            (y,), class_names = _as_classes(name, _labels(y, X.shape[0], f"{name} {target_name or 'y'}"))
        test, val, train = _split_parts(name, y, fractions, seed)
    else:
        y, class_names = regression_targets(y, X.shape[0], name), []
        test, val, train = _split_parts(name, np.zeros(len(y)), fractions, seed)
    x_mean = x_scale = y_mean = y_scale = None
    if scale_features:
        x_mean, x_scale = standardisation(X[train].reshape(len(train), -1))
    if inferred == "regression":
        y_mean, y_scale = standardisation(y[train].reshape(len(train), -1))
    info = DataInfo(task=inferred, class_names=class_names or None, feature_names=feature_names,
                    target_name=target_name, x_mean=x_mean, x_scale=x_scale, y_mean=y_mean, y_scale=y_scale)
    X, y = info.scale_inputs(X), info.scale_targets(y)
    return Dataset(name, X[train], y[train], X[val], y[val], X[test], y[test], class_names, image_shape,
                   info=info, task_note=describe_task(task, inferred))


def _as_classes(name: str, *label_arrays: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
    """Labels mapped to 0..k-1 over all parts; the original values, as given, as the class names
    (1e20 is "100000000000000000000", never an int64 that wrapped)."""
    values = np.unique(np.concatenate(label_arrays))
    if len(values) < 2:
        raise ValueError(f"{name}: the labels hold {len(values)} class{'es' if len(values) != 1 else ''} "
                         f"({', '.join(_label_name(v) for v in values) or 'none'}); a classifier needs at least two")
    return [np.searchsorted(values, y) for y in label_arrays], [_label_name(v) for v in values]


def _label_name(value) -> str:
    """A whole-number label as the integer it is, whatever its type (3.0 is "3")."""
    return str(int(value))


def load_dataset(spec: str, seed: int = 0, target: str | None = None, task: str | None = None) -> Dataset:
    """The data set named by `spec` (see the module docstring), split with `seed`. `target` (the
    target column) applies to csv:, `task` ("classification", "regression", or None to infer it
    from the labels) to csv: and npz:; the others are classification sets."""
    kind, _, path = spec.partition(":")
    path = ",".join(os.path.expanduser(part) for part in path.split(","))  # the shell leaves idx:~/... alone
    if target is not None and kind != "csv":
        raise ValueError(f"--target names a column of a csv: data set, not of {spec}")
    if task == "regression" and kind not in ("csv", "npz"):
        raise ValueError(f"--task regression needs a csv: or npz: data set; {spec} is a classification set")
    if kind == "csv" and path:
        X, y, feature_names, target_name = read_csv(path, target, task)
        return labelled_dataset(spec, X, y, seed, task, scale_features=True, feature_names=feature_names,
                                target_name=target_name)
    if kind == "digits" and not path:
        parts = load_digits_split(seed=seed, val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION)
        return Dataset("digits", *parts, class_names=[str(d) for d in range(10)], image_shape=(1, 8, 8))
    if kind in TOYS and not path:
        X, y = TOYS[kind](TOY_SAMPLES, np.random.default_rng(seed))
        return _split(kind, X, y, seed, ["0", "1"])
    if kind == "npz" and path:
        X, y, shape = _read_npz(path)
        return labelled_dataset(spec, X, y, seed, task, image_shape=shape)
    if kind == "idx" and path:
        parts, shapes = [], []
        for images, labels in _idx_pairs(path):
            raw = read_idx(images)
            shapes.append(_image_shape(raw))
            X = _features(raw, images)
            parts.append((X, _labels(read_idx(labels), X.shape[0], labels)))
        if len(parts) == 1:
            (y,), names = _as_classes(spec, parts[0][1])
            return _split(spec, parts[0][0], y, seed, names, shapes[0])
        (X, y), (X_test, y_test) = parts
        if X.shape[1] != X_test.shape[1]:
            raise ValueError(f"idx:{path}: train images have {X.shape[1]} pixels but test images {X_test.shape[1]}")
        (y, y_test), names = _as_classes(spec, y, y_test)
        val, train = _split_parts(spec, y, {"validation": VAL_FRACTION}, seed)
        return Dataset(spec, X[train], y[train], X[val], y[val], X_test, y_test, names, shapes[0])
    raise ValueError(f"unknown dataset {spec!r}; choose one of {', '.join(NAMES)}")
