"""BatchNorm2D: batch normalization of each channel of an image batch."""

from __future__ import annotations

from backprop.layers.base import register_layer
from backprop.layers.batchnorm import BatchNorm
from backprop.layers.conv import check_image_shape


@register_layer
class BatchNorm2D(BatchNorm):
    """Batch normalization per channel over the batch and the pixels (PyTorch's BatchNorm2d):
    BatchNorm's formulas and running-statistics rules with the N H W values of each channel as
    its rows. The batch is laid out as rows of channels (backends/ops/channels.py), normalized
    by BatchNorm's own ops, and laid back out. A training batch needs at least 2 values per
    channel."""

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__(channels, momentum, eps)
        self.channels = self.num_features
        self.input_shape = None  # any height and width

    def build(self, input_shape):
        channels, h, w = check_image_shape("BatchNorm2D", input_shape, self.channels)
        self.min_train_rows = 2 if h * w == 1 else 1
        self._declare_state()
        return tuple(input_shape)

    def forward(self, x, training: bool):
        backend = self.backend
        n, c, h, w = x.shape
        rows = backend.to_channels_last(x, out=self.workspace("rows", (n * h * w, c)))
        y_rows = super().forward(rows, training)
        return backend.to_channels_first(y_rows, (n, h, w), out=self.workspace("y", x.shape))

    def backward(self, grad_y, need_input_grad: bool = True):
        backend = self.backend
        n, c, h, w = grad_y.shape
        grad_rows = backend.to_channels_last(grad_y, out=self.workspace("grad_rows", (n * h * w, c)))
        grad_x = super().backward(grad_rows, need_input_grad)
        if not need_input_grad:
            return None
        return backend.to_channels_first(grad_x, (n, h, w), out=self.workspace("dx", grad_y.shape))

    def label(self) -> str:
        return f"BatchNorm2D {self.channels}"
