"""Conv2D: a 2-D convolution over NCHW batches (PyTorch's layout), with its activation fused in."""

from __future__ import annotations

import math

from backprop.backends.activations import get_activation
from backprop.backends.ops.image_windows import output_size
from backprop.checks import check_int, check_real
from backprop.initializers import check_init
from backprop.layers.base import Layer, register_layer


def check_pair(name: str, value, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints (height, width), each >= minimum, as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {tuple(value)!r}")
        return check_int(f"{name}[0]", value[0], minimum), check_int(f"{name}[1]", value[1], minimum)
    size = check_int(name, value, minimum, f"an integer >= {minimum} or a pair of them")
    return size, size


def check_image_shape(layer: str, input_shape, channels: int | None = None) -> tuple[int, int, int]:
    """The (C, H, W) shape of one example for an image layer; ValueError for anything else."""
    if len(input_shape) != 3:
        raise ValueError(f"{layer} takes images of shape (channels, height, width) but the layer before it gives "
                         f"shape {tuple(input_shape)}; pass Sequential(..., input_shape=(C, H, W))")
    if channels is not None and input_shape[0] != channels:
        raise ValueError(f"{layer} expects {channels} input channels but the layer before it gives "
                         f"{input_shape[0]} (shape {tuple(input_shape)})")
    return tuple(int(s) for s in input_shape)


def pooled_shape(layer: str, input_shape, kernel, stride, padding=(0, 0)) -> tuple[int, int]:
    """(OH, OW) of a window sliding over (C, H, W); ValueError when the padded image is smaller
    than the window."""
    _, h, w = input_shape
    if h + 2 * padding[0] < kernel[0] or w + 2 * padding[1] < kernel[1]:
        raise ValueError(f"{layer}'s window {kernel[0]}x{kernel[1]} is larger than its padded input "
                         f"{h + 2 * padding[0]}x{w + 2 * padding[1]} (input shape {tuple(input_shape)})")
    return (output_size(h, kernel[0], stride[0], padding[0]), output_size(w, kernel[1], stride[1], padding[1]))


def pair_text(pair) -> str:
    """"2" for (2, 2), "2x1" for (2, 1)."""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


@register_layer
class Conv2D(Layer):
    """A 2-D convolution (cross-correlation, as PyTorch's Conv2d) with zero padding:

        z[n, o, oh, ow] = b[o] + sum over c, i, j of W[o, c, i, j] xpad[n, c, oh sh + i, ow sw + j]
        y = act(z)

    W has shape (out_channels, in_channels, kh, kw) and b (out_channels,), as in PyTorch, so
    weights port both ways. Computed over im2col's columns (backends/ops/im2col.py) in one of two
    layouts, W seen as (out, C kh kw):

    - per image, when an output plane has at least IMAGE_LAYOUT_MIN_POSITIONS positions: one
      product per image, Z[n] = W @ cols[n] with cols[n] (C kh kw, OH OW), which is NCHW as it
      is, then the fused bias and activation. Backward, with dZ[n] = dL/dy[n] act'(z[n]) as
      (out, OH OW):

        dL/dW = (sum over n of cols[n] @ dZ[n].T).T,  dL/db[o] = sum over n and (oh, ow) of dZ[n, o],
        dL/dx = col2im(W.T @ dZ[n] for every n)

      (on planes of at most ROWS_WEIGHT_GRADIENT_MAX_POSITIONS positions, dL/dW is the same sum
      as one product, dZr.T @ colsr, over dZ and the columns laid out as rows (N OH OW, .)),

    - for the batch, on smaller planes (many tiny products per image cost more than one for the
      batch and two layout passes): Z = cols.T @ W.T with cols (C kh kw, N OH OW) gives rows
      (N OH OW, out), the Dense epilogue adds the bias and applies the activation, and the rows
      are laid out as NCHW. Backward, with dZ the rows of dL/dy act'(z):

        dL/dW = dZ.T @ cols.T,  dL/db = sum over the rows of dZ,  dL/dx = col2im(W.T @ dZ.T)

    (dL/dx only when asked). `init` defaults to the activation's (He for the ReLU family, Glorot
    otherwise) with PyTorch's receptive-field fans: fan_in = C kh kw, fan_out = out kh kw.
    `l1`, `l2` and `slope` as for Dense. Dilation and groups other than 1 are refused.
    """

    # The smallest output plane (OH OW) computed per image; smaller ones go by the batch layout.
    # Where the two cross over: benchmarks/RESULTS.md, "Conv2D in the per-image layout".
    IMAGE_LAYOUT_MIN_POSITIONS = 16
    # Up to this output plane, the per-image layout's dL/dW is one product over rows (two layout
    # passes) instead of a product per image of OH OW columns each and their sum: faster there,
    # slower on larger planes (benchmarks/RESULTS.md, "The weight gradient of small planes").
    ROWS_WEIGHT_GRADIENT_MAX_POSITIONS = 16

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, activation=None,
                 l1: float = 0.0, l2: float = 0.0, init=None, slope: float = 0.01, dilation=1, groups=1):
        super().__init__()
        if dilation not in (1, (1, 1), [1, 1]):
            raise ValueError(f"Conv2D supports dilation=1 only, got dilation={dilation!r}")
        if groups != 1:
            raise ValueError(f"Conv2D supports groups=1 only, got groups={groups!r}")
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.kernel_size = check_pair("kernel_size", kernel_size)
        self.stride = check_pair("stride", stride)
        self.padding = check_pair("padding", padding, 0)
        act = get_activation(activation)
        if act.rowwise:
            raise ValueError(f"Conv2D cannot take activation={act.name!r}: it normalizes over a row, which here "
                             "would be the channels of one pixel; use it on a Dense layer after Flatten()")
        self.activation = act.name
        self.l1 = check_real("l1", l1)
        self.l2 = check_real("l2", l2)
        self.slope = check_real("slope", slope)
        self.init = check_init(act.init if init is None else init)

    def build(self, input_shape):
        channels, _, _ = check_image_shape("Conv2D", input_shape, self.in_channels)
        out_h, out_w = pooled_shape("Conv2D", input_shape, self.kernel_size, self.stride, self.padding)
        area = self.kernel_size[0] * self.kernel_size[1]
        self.weight = self.add_parameter("weight", (self.out_channels, channels, *self.kernel_size), self.init,
                                         fan_in=channels * area, fan_out=self.out_channels * area)
        self.bias = self.add_parameter("bias", (self.out_channels,), "zeros")
        return (self.out_channels, out_h, out_w)

    def _weight_matrix(self, array):
        """The weight (or its gradient) seen as (out_channels, C kh kw): a view."""
        return self.backend.reshape(array, (self.out_channels, math.prod(array.shape[1:])))

    def layout(self, positions: int) -> str:
        """The column layout for output planes of `positions` (OH OW) entries: "image" or "batch"."""
        return "image" if positions >= self.IMAGE_LAYOUT_MIN_POSITIONS else "batch"

    def forward(self, x, training: bool):
        backend = self.backend
        n, _, h, w = x.shape
        out_h = output_size(h, self.kernel_size[0], self.stride[0], self.padding[0])
        out_w = output_size(w, self.kernel_size[1], self.stride[1], self.padding[1])
        out, positions = self.out_channels, out_h * out_w
        self._layout = self.layout(positions)
        if self._layout == "batch":
            return self._forward_batch(x, out_h, out_w)
        cols = backend.im2col(x, self.kernel_size, self.stride, self.padding,
                              out=self.workspace("cols", (n, self.weight.size // out, positions)))
        y = self.workspace("y", (n, out, out_h, out_w))
        z = backend.matmul(self._weight_matrix(self.weight.data), cols, out=backend.reshape(y, (n, out, positions)))
        # the bias as a row per image (each channel's repeated over its plane): the Dense epilogue
        # then adds it and applies the activation in one pass, in place
        bias_row = backend.copy(backend.reshape(self.bias.data, (out, 1)),
                                out=self.workspace("bias_planes", (out, positions)))
        z_rows = backend.reshape(z, (n, out * positions))
        _, pre = backend.bias_activation_forward(z_rows, backend.reshape(bias_row, (out * positions,)),
                                                 self.activation, self.slope, out=z_rows)
        self._x_shape, self._cols, self._y, self._pre = x.shape, cols, y, pre
        return y

    def _forward_batch(self, x, out_h: int, out_w: int):
        """The forward pass in the batch layout: one product for the whole batch, as rows."""
        backend = self.backend
        n, out = x.shape[0], self.out_channels
        cols = backend.im2col(x, self.kernel_size, self.stride, self.padding, layout="batch",
                              out=self.workspace("cols_batch", (self.weight.size // out, n * out_h * out_w)))
        z = backend.matmul(cols, self._weight_matrix(self.weight.data), transpose_a=True, transpose_b=True,
                           out=self.workspace("z_rows", (n * out_h * out_w, out)))
        _, pre = backend.bias_activation_forward(z, self.bias.data, self.activation, self.slope, out=z)
        y = backend.to_channels_first(z, (n, out_h, out_w), out=self.workspace("y", (n, out, out_h, out_w)))
        self._x_shape, self._cols, self._y, self._pre = x.shape, cols, z, pre
        return y

    def _backward_batch(self, grad_y, need_input_grad: bool):
        """The backward pass in the batch layout (see the class docstring)."""
        backend = self.backend
        weight, cols = self.weight, self._cols
        dz = grad_rows = backend.to_channels_last(grad_y, out=self.workspace("grad_rows", self._y.shape))
        if self.activation != "linear":  # into another array: an activation's backward may not run in place
            dz = backend.activation_backward(grad_rows, self._y, self._pre, self.activation, self.slope,
                                             out=self.workspace("dz", grad_rows.shape))
        backend.matmul(dz, cols, transpose_a=True, transpose_b=True, out=self._weight_matrix(weight.grad))
        backend.sum_rows(dz, out=self.bias.grad)
        if self.l1 or self.l2:
            backend.l1_l2_penalty_grad(weight.data, weight.grad, self.l1, self.l2)
        if not need_input_grad:
            return None
        dcols = backend.matmul(self._weight_matrix(weight.data), dz, transpose_a=True, transpose_b=True,
                               out=self.workspace("dcols_batch", cols.shape))
        return backend.col2im(dcols, self._x_shape, self.kernel_size, self.stride, self.padding, layout="batch",
                              out=self.workspace("dx", self._x_shape))

    def backward(self, grad_y, need_input_grad: bool = True):
        if self._layout == "batch":
            return self._backward_batch(grad_y, need_input_grad)
        backend = self.backend
        n, out, out_h, out_w = grad_y.shape
        dz = grad_rows = backend.reshape(grad_y, (n, out * out_h * out_w))
        if self.activation != "linear":  # into another array: an activation's backward may not run in place
            dz = backend.activation_backward(grad_rows, backend.reshape(self._y, grad_rows.shape), self._pre,
                                             self.activation, self.slope, out=self.workspace("dz", grad_rows.shape))
        dz_stack = backend.reshape(dz, (n, out, out_h * out_w))
        weight, cols = self.weight, self._cols
        taps, positions = cols.shape[1], out_h * out_w
        if positions <= self.ROWS_WEIGHT_GRADIENT_MAX_POSITIONS:
            # dW = dZr^T @ colsr: the rows (n, oh, ow) of dZ and of the columns, one product
            dz_rows = backend.to_channels_last(backend.reshape(dz, grad_y.shape),
                                               out=self.workspace("dz_rows", (n * positions, out)))
            cols_rows = backend.to_channels_last(backend.reshape(cols, (n, taps, positions, 1)),
                                                 out=self.workspace("cols_rows", (n * positions, taps)))
            backend.matmul(dz_rows, cols_rows, transpose_a=True, out=self._weight_matrix(weight.grad))
        else:
            # dW^T = sum over n of cols[n] @ dZ[n]^T: one product per image (faster than one GEMM
            # over transposed copies of dZ and cols, and than dZ[n] @ cols[n]^T:
            # benchmarks/RESULTS.md), summed over the batch, then laid out as dW (the (C kh kw,
            # out) rows as one plane)
            per_image = backend.matmul(cols, dz_stack, transpose_b=True,
                                       out=self.workspace("dweight_per_image", (n, taps, out)))
            dweight_rows = backend.sum_rows(backend.reshape(per_image, (n, weight.size)),
                                            out=self.workspace("dweight_rows", (weight.size,)))
            backend.to_channels_first(backend.reshape(dweight_rows, (taps, out)), (1, taps, 1),
                                      out=backend.reshape(weight.grad, (1, out, taps, 1)))
        # db: the sums over the batch, then over each channel's plane (laid out as rows of channels)
        planes = backend.sum_rows(dz, out=self.workspace("dbias_planes", (out * out_h * out_w,)))
        rows = backend.to_channels_last(backend.reshape(planes, (1, out, out_h * out_w, 1)),
                                        out=self.workspace("dbias_rows", (out_h * out_w, out)))
        backend.sum_rows(rows, out=self.bias.grad)
        if self.l1 or self.l2:
            backend.l1_l2_penalty_grad(weight.data, weight.grad, self.l1, self.l2)
        if not need_input_grad:
            return None
        dcols = backend.matmul(self._weight_matrix(weight.data), dz_stack, transpose_a=True,
                               out=self.workspace("dcols", cols.shape))
        return backend.col2im(dcols, self._x_shape, self.kernel_size, self.stride, self.padding,
                              out=self.workspace("dx", self._x_shape))

    def penalty(self):
        if not (self.l1 or self.l2):
            return None
        return self.backend.l1_l2_penalty(self.weight.data, self.l1, self.l2)

    def label(self) -> str:
        """"Conv2D 1->32 3x3 pad 1 relu"."""
        kh, kw = self.kernel_size
        parts = [f"Conv2D {self.in_channels}->{self.out_channels} {kh}x{kw}"]
        if self.stride != (1, 1):
            parts.append(f"stride {pair_text(self.stride)}")
        if self.padding != (0, 0):
            parts.append(f"pad {pair_text(self.padding)}")
        if self.activation != "linear":
            parts.append(self.activation)
        parts += [f"{k} {v:g}" for k, v in (("l1", self.l1), ("l2", self.l2)) if v]
        return " ".join(parts)

    def config(self):
        init = self.init if isinstance(self.init, str) else None  # as Dense: the weights are in the checkpoint
        return {"type": self.type_name(), "in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding),
                "activation": self.activation, "l1": self.l1, "l2": self.l2, "init": init, "slope": self.slope}
