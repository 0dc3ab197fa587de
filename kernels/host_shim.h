// Host emulation of the little CUDA our kernels use, so the unchanged .cu files compile with g++
// (-std=c++20 -include host_shim.h) and run on the CPU in tests, where no GPU exists.
//
// - __global__, __device__, __forceinline__ become plain C++; threadIdx/blockIdx are thread-local,
//   blockDim/gridDim global: they hold what a launch sets.
// - __shared__ becomes `static`: one copy per kernel instantiation, shared by the block's threads.
//   Blocks run one after another, so one copy serves every block in turn.
// - A launch runs block by block. Kernels without barriers run their threads one after another on
//   the calling thread ("sequential" mode). A kernel that reaches __syncthreads runs one host
//   thread per CUDA thread with a std::barrier per block ("threaded" mode). The mode is found by
//   trying: in sequential mode __syncthreads throws NeedsBarrier before any thread passes the
//   barrier, and the caller relaunches threaded. (So a kernel must not update global memory in
//   place before its first barrier; none of ours does.)
// - BP_HOST_ENTRY(kernel) exports `int bp_host_<kernel>(grid, block, threaded, void** args)`,
//   where args[i] points at the i-th argument, as cuLaunchKernel's kernelParams do. The
//   parameter types come from the kernel's own declaration, deduced by the compiler. It returns
//   0, or 1 when a sequential launch needs a threaded one.
#ifndef BP_HOST_SHIM_H
#define BP_HOST_SHIM_H

#include <math.h>

#include <barrier>
#include <cstddef>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct bp_dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

inline thread_local bp_dim3 threadIdx;
inline thread_local bp_dim3 blockIdx;
inline bp_dim3 blockDim;
inline bp_dim3 gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

namespace bp_host {

struct NeedsBarrier {};

// The barrier of the block this host thread runs in; null in sequential mode.
inline thread_local std::barrier<>* block_barrier = nullptr;

template <typename... Params>
constexpr std::size_t arity(void (*)(Params...)) { return sizeof...(Params); }

template <typename... Params, std::size_t... I>
void call(void (*kernel)(Params...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<Params>*>(args[I])...);
}

// Calls Kernel with the arguments args[i] points at; one small function per kernel, so that the
// launcher below is compiled once, not once per kernel.
template <auto Kernel>
void trampoline(void** args) {
    call(Kernel, args, std::make_index_sequence<arity(Kernel)>{});
}

inline int launch(unsigned int grid, unsigned int block, int threaded, void (*body)(void**), void** args) {
    gridDim = bp_dim3{grid, 1, 1};
    blockDim = bp_dim3{block, 1, 1};
    for (unsigned int b = 0; b < grid; ++b) {
        if (!threaded) {
            try {
                for (unsigned int t = 0; t < block; ++t) {
                    blockIdx = bp_dim3{b, 1, 1};
                    threadIdx = bp_dim3{t, 1, 1};
                    body(args);
                }
            } catch (const NeedsBarrier&) {
                return 1;
            }
            continue;
        }
        std::barrier<> barrier(block);
        std::vector<std::jthread> threads;
        threads.reserve(block);
        for (unsigned int t = 0; t < block; ++t) {
            threads.emplace_back([&barrier, body, args, b, t] {
                block_barrier = &barrier;
                blockIdx = bp_dim3{b, 1, 1};
                threadIdx = bp_dim3{t, 1, 1};
                body(args);
                // A CUDA thread that has exited no longer counts at later barriers.
                barrier.arrive_and_drop();
            });
        }
    }  // each block's jthreads join here, before the next block starts
    return 0;
}

}  // namespace bp_host

inline void __syncthreads() {
    if (bp_host::block_barrier == nullptr) throw bp_host::NeedsBarrier{};
    bp_host::block_barrier->arrive_and_wait();
}

#define BP_HOST_ENTRY(kernel)                                                                    \
    extern "C" int bp_host_##kernel(unsigned int grid, unsigned int block, int threaded,       \
                                    void** args) {                                             \
        return bp_host::launch(grid, block, threaded, &bp_host::trampoline<kernel>, args);       \
    }

#endif  // BP_HOST_SHIM_H
