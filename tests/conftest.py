"""With BACKPROP_CUPY_DOUBLE set, `import cupy` gives the CuPy double (tests/cupy_double.py) for
the whole session, before any test module asks whether a GPU is usable: the `gpu` tests then
run on a machine without one, through the host builds of our kernels under the emulation the
variable names ("plain", "gpu" or options joined by commas: cupy_double.emulation_named).

    BACKPROP_CUPY_DOUBLE=gpu pytest -m gpu tests/test_gpu.py tests/test_extreme.py tests/test_distributed.py

Unset (the normal run), this file does nothing.
"""

import cupy_double

cupy_double.install_from_environment()
