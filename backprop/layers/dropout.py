"""Dropout: inverted dropout with masks every backend draws alike."""

from __future__ import annotations

from backprop.checks import check_real
from backprop.layers.base import Layer, register_layer


@register_layer
class Dropout(Layer):
    """Inverted dropout: in training, y = x * m with m_i = 0 (probability p) or 1 / (1 - p);
    in eval, y = x. dL/dx = dL/dy * m.

    The mask of step s comes from a counter-based hash of (network seed, layer position, s)
    (`noise_key`), so every backend draws the same mask and a resumed run draws what the
    uninterrupted one would have. `step` is a counter: checkpoints keep it.
    """

    counters = ("step",)

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = check_real("p", p, 0.0, 1.0, high_open=True)
        self.step = 0

    def forward(self, x, training: bool):
        self._mask = None
        if not training or self.p == 0.0:
            return x
        key = self.noise_key(self.step)
        self.step += 1
        y, self._mask = self.backend.dropout_forward(x, self.p, key, out=self.workspace("y", x.shape))
        return y

    def backward(self, grad_y, need_input_grad: bool = True):
        if self._mask is None:
            return grad_y
        return self.backend.dropout_backward(grad_y, self._mask, out=self.workspace("dx", grad_y.shape))

    def label(self) -> str:
        return f"Dropout {self.p:g}"
