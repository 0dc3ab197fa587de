"""Flatten: each example's array as one vector."""

from __future__ import annotations

import math

from backprop.layers.base import Layer, register_layer


@register_layer
class Flatten(Layer):
    """y = x reshaped to (rows, prod(example shape)); dL/dx = dL/dy reshaped back. No copy: both
    are views of C-contiguous arrays."""

    def build(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x, training: bool):
        self._shape = x.shape
        return self.backend.reshape(x, (x.shape[0], math.prod(x.shape[1:])))

    def backward(self, grad_y, need_input_grad: bool = True):
        return self.backend.reshape(grad_y, self._shape) if need_input_grad else None

    def label(self) -> str:
        return "Flatten"
