"""Data-parallel throughput on the large config (784-1024-1024-10, ReLU, cross-entropy, batch 512).

    mpiexec -n 1 python benchmarks/distributed_scaling.py --threads 1
    mpiexec -n 2 python benchmarks/distributed_scaling.py --threads 1
    python benchmarks/distributed_scaling.py --threads 2          # one process, no MPI

Rank 0 prints one JSON line: training samples per second of fit (the global batch of 512 rows
split over the ranks; the fastest of --repeats one-epoch fits, and the median, since a shared
machine's other load only ever slows a run down), and the two sides of the scaling model
measured separately: one rank's compute per step (forward + backward + update on its shard,
no communication) and one allreduce of the flat float32 gradient (4 bytes per parameter).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import backprop as bp

WIDTHS = (784, 1024, 1024, 10)
BATCH = 512


def build(seed=0):
    layers = [bp.Dense(a, b, activation="relu") for a, b in zip(WIDTHS[:-2], WIDTHS[1:-1])]
    net = bp.Sequential(*layers, bp.Dense(WIDTHS[-2], WIDTHS[-1]), seed=seed)
    return net, bp.SGD(net.parameters(), lr=0.01, momentum=0.9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per rank")
    parser.add_argument("--samples", type=int, default=16 * BATCH)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-mpi", action="store_true", help="one plain process (fit without distributed)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.samples, WIDTHS[0])).astype(np.float32)
    y = rng.integers(0, WIDTHS[-1], args.samples)
    loss = bp.CrossEntropyLoss()
    ranks, rank = 1, 0
    if not args.no_mpi:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        ranks, rank = comm.Get_size(), comm.Get_rank()
    with threadpool_limits(args.threads):
        net, opt = build()
        fit = dict(loss=loss, optimizer=opt, batch_size=BATCH, progress=False, distributed=not args.no_mpi)
        bp.fit(net, X, y, epochs=1, **fit)  # warm-up: workspaces, caches, MPI connections
        epochs = []
        for _ in range(args.repeats):
            if not args.no_mpi:
                comm.Barrier()
            start = time.perf_counter()
            bp.fit(net, X, y, epochs=1, **fit)
            epochs.append(time.perf_counter() - start)

        # compute per step of one rank: its shard of the batch, no communication
        shard = X[: BATCH // ranks], y[: BATCH // ranks]
        single, single_opt = build()
        steps = []
        for _ in range(10):
            start = time.perf_counter()
            bp.fit(single, *shard, loss=loss, optimizer=single_opt, batch_size=BATCH, epochs=1, progress=False)
            steps.append(time.perf_counter() - start)

    allreduce = [math.nan]
    if not args.no_mpi and ranks > 1:
        grad = np.ones(net.num_parameters(), dtype=np.float32)
        allreduce = []
        for _ in range(20):
            comm.Barrier()
            start = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, grad, op=MPI.SUM)
            allreduce.append(time.perf_counter() - start)
    if rank == 0:
        batches = -(-args.samples // BATCH)
        print(json.dumps({
            "ranks": ranks, "threads_per_rank": args.threads, "mpi": not args.no_mpi,
            "samples_per_s_best": round(args.samples / min(epochs)),
            "samples_per_s_median": round(args.samples / statistics.median(epochs)),
            "step_ms_best": round(min(epochs) / batches * 1e3, 1),
            "compute_ms_per_rank_step_best": round(min(steps) * 1e3, 1),
            "allreduce_ms_best": round(min(allreduce) * 1e3, 2),
            "params": net.num_parameters(), "allreduce_bytes": 4 * net.num_parameters(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
        }))


if __name__ == "__main__":
    main()
