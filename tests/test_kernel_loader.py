"""The kernel loader: sources as package data with headers inlined (so CuPy's cache key follows
them), one f32 and one f64 kernel per op, and the launcher's argument conversion."""

from __future__ import annotations

import re

import numpy as np
import pytest

from backprop.kernels import loader
from backprop.kernels.loader import Param, convert_argument, kernel_index, kernel_source, source_names
from host_kernels import signatures


def test_sources_are_package_data_with_headers_inlined():
    assert "activations.cu" in source_names() and "optimizers.cu" in source_names()
    for name in source_names():
        text = kernel_source(name)
        assert not re.search(r'#\s*include\s*"', text), f"{name} still includes a header"
        assert "bp_block_reduce" in text  # common.cuh is in the text CuPy hashes


def test_editing_a_header_changes_the_compiled_text(monkeypatch):
    before = kernel_source("softmax.cu")
    read = loader._read
    monkeypatch.setattr(loader, "_read", lambda n: read(n) + "\n// edited" if n.endswith(".cuh") else read(n))
    loader.kernel_source.cache_clear()
    try:
        assert kernel_source("softmax.cu") != before
    finally:
        loader.kernel_source.cache_clear()


def test_every_op_has_a_float32_and_a_float64_kernel_with_matching_parameters():
    index = kernel_index()
    assert len(index) > 80
    for name, (_, params) in index.items():
        stem, suffix = name.rsplit("_", 1)
        assert suffix in ("f32", "f64"), f"{name}: kernels are named <op>_f32 / <op>_f64"
        twin = index[f"{stem}_{'f64' if suffix == 'f32' else 'f32'}"][1]
        swap = {"float": "double", "double": "float"}
        assert [(p.name, swap.get(p.ctype, p.ctype), p.pointer) for p in params] == \
               [(p.name, p.ctype, p.pointer) for p in twin], name


def test_the_loader_and_the_test_parser_read_the_same_signatures():
    for name in source_names():
        ours = {k: [(p.ctype, p.pointer) for p in v] for k, v in loader.kernel_signatures(kernel_source(name)).items()}
        assert ours == signatures(kernel_source(name))


@pytest.mark.parametrize("ctype, value, expected", [
    ("float", 0.1, np.float32(0.1)), ("double", 0.1, np.float64(0.1)), ("float", 3, np.float32(3.0)),
    ("int", 1, np.int32(1)), ("long long", 2**40, np.int64(2**40)), ("unsigned int", 2**32 - 1, np.uint32(2**32 - 1)),
])
def test_scalars_are_cast_to_the_exact_c_type(ctype, value, expected):
    got = convert_argument("k", Param("p", ctype, False), value)
    assert type(got) is type(expected) and got == expected


@pytest.mark.parametrize("ctype, value, error", [
    ("int", 1.5, TypeError), ("int", True, TypeError), ("unsigned int", -1, ValueError),
    ("int", 2**31, ValueError), ("float", "1", TypeError), ("float", None, TypeError),
])
def test_scalars_that_would_change_meaning_are_refused(ctype, value, error):
    with pytest.raises(error, match="k: argument 'p'"):
        convert_argument("k", Param("p", ctype, False), value)


def test_arrays_must_be_c_contiguous_and_of_the_pointee_dtype():
    x = np.zeros((4, 6), dtype=np.float32)
    assert convert_argument("k", Param("x", "float", True), x) is x
    with pytest.raises(ValueError, match="C-contiguous"):
        convert_argument("k", Param("x", "float", True), x[:, ::2])
    with pytest.raises(TypeError, match="must hold float64"):
        convert_argument("k", Param("x", "double", True), x)
    with pytest.raises(TypeError, match="device array"):
        convert_argument("k", Param("x", "float", True), 1.0)


def test_a_pointer_takes_only_an_array_of_the_device_array_type():
    """A host NumPy array of one element would reach the kernel by value, not as a pointer."""

    class DeviceArray(np.ndarray):
        pass

    host = np.zeros(1, dtype=np.float32)
    device = host.view(DeviceArray)
    assert convert_argument("k", Param("x", "float", True), device, array_type=DeviceArray) is device
    with pytest.raises(TypeError, match="k: argument 'x' .* must be a device array .*got numpy.ndarray"):
        convert_argument("k", Param("x", "float", True), host, array_type=DeviceArray)


@pytest.mark.parametrize("grid, block", [(0, 32), (-1, 32), (1, 0), (1, 1025), (1.0, 32)])
def test_launch_shapes_no_kernel_is_sized_for_are_refused_before_launching(grid, block):
    launched = []
    launcher = loader.Launcher(lambda *args: launched.append(args), "k", ())
    with pytest.raises(ValueError, match="k: "):
        launcher(grid, block)
    assert not launched
    launcher(1, 1024)
    assert launched == [((1,), (1024,), ())]
