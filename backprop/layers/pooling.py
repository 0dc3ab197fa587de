"""MaxPool2D and AvgPool2D: windows over NCHW batches, as PyTorch's (no padding)."""

from __future__ import annotations

from backprop.layers.base import Layer, register_layer
from backprop.layers.conv import pair_text, check_image_shape, check_pair, pooled_shape


class _Pool2D(Layer):
    """What both poolings share: a window (kh, kw) moved by a stride that defaults to the window."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = check_pair("kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else check_pair("stride", stride)

    def build(self, input_shape):
        shape = check_image_shape(type(self).__name__, input_shape)
        return (shape[0], *pooled_shape(type(self).__name__, shape, self.kernel_size, self.stride))

    def _out_shape(self, x):
        return (*x.shape[:2], *pooled_shape(type(self).__name__, x.shape[1:], self.kernel_size, self.stride))

    def label(self) -> str:
        """"MaxPool2D 2x2" (stride when it is not the window)."""
        kh, kw = self.kernel_size
        stride = "" if self.stride == self.kernel_size else f" stride {pair_text(self.stride)}"
        return f"{type(self).__name__} {kh}x{kw}{stride}"

    def config(self):
        return {"type": self.type_name(), "kernel_size": list(self.kernel_size), "stride": list(self.stride)}


@register_layer
class MaxPool2D(_Pool2D):
    """y = the maximum of each window; ties go to the first maximum (row by row), NaN propagates,
    as in PyTorch. Backward sends dL/dy to the element each window chose (a sum where
    overlapping windows chose the same one); see backends/ops/max_pool.py."""

    def forward(self, x, training: bool):
        y, self._index = self.backend.max_pool_forward(x, self.kernel_size, self.stride,
                                                       out=self.workspace("y", self._out_shape(x)))
        self._x_shape = x.shape
        return y

    def backward(self, grad_y, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        return self.backend.max_pool_backward(grad_y, self._index, self._x_shape, self.kernel_size, self.stride,
                                              out=self.workspace("dx", self._x_shape))


@register_layer
class AvgPool2D(_Pool2D):
    """y = the mean of each window (kh kw elements); dL/dx gets dL/dy / (kh kw) from every window
    that covers it; see backends/ops/avg_pool.py."""

    def forward(self, x, training: bool):
        self._x_shape = x.shape
        return self.backend.avg_pool_forward(x, self.kernel_size, self.stride,
                                             out=self.workspace("y", self._out_shape(x)))

    def backward(self, grad_y, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        return self.backend.avg_pool_backward(grad_y, self._x_shape, self.kernel_size, self.stride,
                                              out=self.workspace("dx", self._x_shape))
