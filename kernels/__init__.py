"""backprop.kernels: the CUDA C behind CupyBackend (*.cu, with shared helpers in *.cuh), the loader
that compiles it through CuPy, and host_shim.h, which lets g++ compile the same sources for tests
on machines without a GPU."""
