"""What a model was trained on, kept in its checkpoint: the task, the names of the classes and of
the input features, and the scaling applied to the inputs (and to a regression's targets), so
the model is used on new data exactly as it was trained.

    info = bp.DataInfo(task="regression", feature_names=("rooms", "age"),
                       x_mean=X.mean(axis=0), x_scale=X.std(axis=0))
    bp.save(net, "model.safetensors", data_info=info)
    info = bp.load_data_info("model.safetensors")      # None for a file saved without one

The scalings are standardisations, element by element of an example (flattened):
    inputs    x' = (x - x_mean) / x_scale       what the network is given
    targets   y' = (y - y_mean) / y_scale       what a regression network learns to predict,
              so its prediction p' means y = p' * y_scale + y_mean
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

TASKS = ("classification", "regression")


@dataclasses.dataclass(frozen=True, eq=False)  # arrays have no one truth value to compare by
class DataInfo:
    """The task and the data's names and scalings (see the module docstring). Every field but
    `task` may be None: no names, no scaling."""

    task: str = "classification"
    class_names: tuple | None = None
    feature_names: tuple | None = None
    target_name: str | None = None
    x_mean: np.ndarray | None = None
    x_scale: np.ndarray | None = None
    y_mean: np.ndarray | None = None
    y_scale: np.ndarray | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        for field in ("class_names", "feature_names"):
            names = getattr(self, field)
            if names is not None:
                if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                    raise TypeError(f"{field} must be a sequence of strings, got {names!r}")
                object.__setattr__(self, field, tuple(names))
        if self.target_name is not None and not isinstance(self.target_name, str):
            raise TypeError(f"target_name must be a string or None, got {self.target_name!r}")
        if self.task == "classification" and self.class_names is not None and len(self.class_names) < 2:
            raise ValueError(f"class_names must name at least two classes, got {list(self.class_names)}")
        if self.task == "classification" and (self.y_mean is not None or self.y_scale is not None):
            raise ValueError("y_mean and y_scale scale a regression's targets; a classification has none")
        for mean, scale in (("x_mean", "x_scale"), ("y_mean", "y_scale")):
            self._set_scaling(mean, scale)

    def _set_scaling(self, mean_field: str, scale_field: str) -> None:
        """A mean and a scale come together, as 1-D float64 arrays of one length (an example
        flattened); the means finite, the scales finite and > 0."""
        mean, scale = getattr(self, mean_field), getattr(self, scale_field)
        if (mean is None) != (scale is None):
            raise ValueError(f"{mean_field} and {scale_field} come together: give both or neither")
        if mean is None:
            return
        values = []
        for field, given in ((mean_field, mean), (scale_field, scale)):
            try:
                array = np.asarray(given, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise TypeError(f"{field} must be an array of numbers, got {given!r}") from None
            if array.size == 0 or not np.all(np.isfinite(array)):
                raise ValueError(f"{field} must hold finite numbers, got {array.size} values with NaN, inf or none")
            values.append(array)
        if values[0].shape != values[1].shape:
            raise ValueError(f"{mean_field} has {values[0].size} values but {scale_field} {values[1].size}")
        if not np.all(values[1] > 0):
            raise ValueError(f"{scale_field} must be > 0 everywhere, got a minimum of {values[1].min():g}")
        for field, array in zip((mean_field, scale_field), values):
            array.flags.writeable = False
            object.__setattr__(self, field, array)

    # ------------------------------------------------------------------ the network it describes

    def check_network(self, net) -> None:
        """ValueError unless this describes `net`'s inputs and outputs: one feature name and one
        input scale per value of an example, one class name per output (or two classes for a
        single output), one target scale per output of a regression."""
        sizes = {"feature_names": self.feature_names, "x_mean": self.x_mean}
        for field, values in sizes.items():
            if values is not None and len(values) != net.in_features:
                raise ValueError(f"{field} has {len(values)} values but the network takes {net.in_features} "
                                 f"per example (input shape {tuple(net.input_shape)})")
        outputs = net.out_features
        if self.class_names is not None:
            classes = len(self.class_names)
            if self.task == "regression" or not (classes == outputs or (classes == 2 and outputs == 1)):
                raise ValueError(f"class_names names {classes} classes but the network has {outputs} outputs")
        if self.y_mean is not None and len(self.y_mean) != outputs:
            raise ValueError(f"y_mean has {len(self.y_mean)} values but the network has {outputs} outputs")

    # ------------------------------------------------------------------ applying the scalings

    def scale_inputs(self, X: np.ndarray) -> np.ndarray:
        """(X - x_mean) / x_scale over each example flattened, in X's shape; X itself if unscaled."""
        if self.x_mean is None:
            return X
        rows = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        return ((rows - self.x_mean) / self.x_scale).reshape(np.shape(X))

    def scale_targets(self, y: np.ndarray) -> np.ndarray:
        """(y - y_mean) / y_scale: what a regression network is trained to predict."""
        if self.y_mean is None:
            return y
        return _by_output(y, lambda t: (t - self.y_mean) / self.y_scale)

    def unscale_targets(self, predicted: np.ndarray) -> np.ndarray:
        """predicted * y_scale + y_mean: a regression network's output in the targets' units."""
        if self.y_mean is None:
            return predicted
        return _by_output(predicted, lambda p: p * self.y_scale + self.y_mean)

    # ------------------------------------------------------------------ the checkpoint's record

    def to_record(self) -> dict:
        """A JSON object; floats as Python writes them, which read back bit for bit."""
        record = {"task": self.task}
        for field in ("class_names", "feature_names"):
            if getattr(self, field) is not None:
                record[field] = list(getattr(self, field))
        if self.target_name is not None:
            record["target_name"] = self.target_name
        for field in ("x_mean", "x_scale", "y_mean", "y_scale"):
            if getattr(self, field) is not None:
                record[field] = [float(v) for v in getattr(self, field)]
        return record

    @classmethod
    def from_record(cls, record) -> DataInfo:
        """The DataInfo a record describes; TypeError or ValueError for anything malformed
        (a key it does not know, a value of the wrong type or out of range)."""
        if not isinstance(record, dict):
            raise TypeError(f"the data record must be a JSON object, got {type(record).__name__}")
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(record) - fields)
        if unknown:
            raise ValueError(f"the data record has unknown keys {unknown} (it may hold {sorted(fields)})")
        for field in ("class_names", "feature_names"):
            if record.get(field) is not None and not isinstance(record[field], list):
                raise TypeError(f"{field} must be a list of strings")
        for field in ("x_mean", "x_scale", "y_mean", "y_scale"):
            values = record.get(field)
            if values is not None and (not isinstance(values, list) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
                raise TypeError(f"{field} must be a list of finite numbers")
        return cls(**record)


def _by_output(values: np.ndarray, scale) -> np.ndarray:
    """`scale` applied to targets or predictions of shape (rows,) or (rows, outputs)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        return scale(values[:, None])[:, 0]
    return scale(values)
