"""Data-parallel training on 2 ranks of this machine (mpiexec over loopback).

Each test starts `mpiexec -n 2 python tests/distributed_worker.py CASE` with a timeout, so a
deadlock (a rank left waiting in a collective) fails the test instead of hanging CI, and
compares the ranks' final networks with each other and with the same case in one process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backprop as bp
from backprop import distributed
from backprop.backends import cuda_status
from backprop.parallel import rank_noise_seed

pytest.importorskip("mpi4py")

WORKER = Path(__file__).with_name("distributed_worker.py")
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
TIMEOUT_S = 60

sys.path.insert(0, str(WORKER.parent))
from distributed_worker import build  # noqa: E402

pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install 'backprop-gpu[mpi]')")


def launch(command: list[str], cwd=None) -> tuple[str, str]:
    """(stdout, stderr) of `command`, which must succeed within TIMEOUT_S."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           # OpenMPI's mpiexec refuses to start as root (as in a container) without both; MPICH ignores them
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    # a session of its own, so a hung run is killed with every rank it started
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=cwd, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{command}: did not finish in {TIMEOUT_S} s (a rank waiting forever?)\n{stdout}{stderr}")
    assert proc.returncode == 0, f"{command} failed:\n{stdout}{stderr}"
    return stdout, stderr


def run_ranks(case: str, out: Path, ranks: int = 2) -> list[dict]:
    """Run `case` on `ranks` MPI processes; each rank's results as a dict."""
    launch([MPIEXEC, "-n", str(ranks), sys.executable, str(WORKER), case, str(out)])
    results = []
    for rank in range(ranks):
        with np.load(out / f"rank{rank}.npz") as saved:
            result = {key: saved[key] for key in saved.files}
        result["history"] = json.loads(str(result["history"]))
        result["outcome"] = str(result["outcome"])
        results.append(result)
    return results


def one_process(case: str):
    """The case in one process at the full batch size: (net, optimizer, history or the exception)."""
    net, opt, X, y, kwargs = build(case, rank=0)
    try:
        outcome = bp.fit(net, X, y, optimizer=opt, **kwargs)
    except bp.TrainingDivergedError as exc:
        outcome = exc
    return net, opt, outcome


def assert_ranks_identical(results):
    first = results[0]
    for other in results[1:]:
        assert other.keys() == first.keys()
        for key in first:  # bit for bit: parameters, layer state, history, outcome, step count
            np.testing.assert_array_equal(other[key], first[key], err_msg=key)


def assert_history_close(history, reference, rtol):
    assert history["epochs"] == len(reference["loss"])
    for key, values in reference.items():
        np.testing.assert_allclose(history["history"][key], values, rtol=rtol, err_msg=key)


@pytest.mark.parametrize("case, rtol", [("mean_float64", 1e-12), ("adam_float32", 2e-5),
                                        ("sum_one_row_last_batch", 1e-12), ("cnn_float64", 1e-12),
                                        ("weighted_clipped", 1e-12), ("weighted_penalty_per_weight", 1e-12)])
def test_two_ranks_at_half_batch_equal_one_process(case, rtol, tmp_path):
    """Weights and per-epoch metrics of 2 ranks = one process with the whole batch, to rounding:
    an uneven last batch (shards of 5 and 6 rows), a 1-row last batch (rank 0 gets none),
    reduction="sum", l1/l2 penalties, momentum, Adam, a validation split, image batches; sample
    weights (their sum over both ranks' rows), gradient clipping after the allreduce,
    ReduceLROnPlateau, metrics from counts summed over the ranks."""
    results = run_ranks(case, tmp_path)
    assert_ranks_identical(results)
    net, opt, history = one_process(case)
    np.testing.assert_allclose(results[0]["params"], bp.to_numpy(net.store.data), rtol=rtol, atol=rtol)
    assert_history_close(results[0]["history"], history.history, rtol=max(rtol, 1e-10))
    assert int(results[0]["steps"]) == opt.step_count


def test_data_refused_on_one_rank_is_refused_on_every_rank_before_anything_changes(tmp_path):
    """Checked before the ranks share anything: a rank refusing alone would leave the others
    waiting in the first collective (the test's timeout would fail it)."""
    results = run_ranks("bad_data_on_one_rank", tmp_path)
    assert results[1]["outcome"].startswith("refused: X must be finite, but X[7, 2] is nan")
    assert results[0]["outcome"].startswith("refused: another rank refused its data")
    net, _, _, _, _ = build("bad_data_on_one_rank")
    for result in results:
        np.testing.assert_array_equal(result["params"], bp.to_numpy(net.store.data))  # untouched


def test_data_read_a_batch_at_a_time_is_read_by_each_rank_only_where_it_trains_or_checks(tmp_path):
    """X read by index arrays on 2 ranks: each rank checks its own half of the rows, then reads
    only its shard of each batch (sorted), and the result is one process's on the same data."""
    from backprop.batches import epoch_order

    results = run_ranks("streamed", tmp_path)
    net, opt, history = one_process("streamed")
    n, batch, epochs = 203, 32, 3
    for rank, result in enumerate(results):
        np.testing.assert_allclose(result["params"], bp.to_numpy(net.store.data), rtol=1e-12, atol=1e-12)
        shards = [np.sort(epoch_order(net.seed, epoch, n)[start + rank * rows // 2:start + (rank + 1) * rows // 2])
                  for epoch in range(epochs) for start in range(0, n, batch)
                  for rows in [min(batch, n - start)]]
        sizes, rows_read = result["reads"], result["rows_read"]
        checked = sum(sizes[:-len(shards)])
        half = range(rank * n // 2, (rank + 1) * n // 2)
        assert set(rows_read[:checked].tolist()) == set(half)
        np.testing.assert_array_equal(rows_read[checked:], np.concatenate(shards))


def test_a_users_own_activation_layer_and_loss_train_on_two_ranks(tmp_path):
    """The README's softsign, Recenter and LogCoshLoss on 2 ranks: Recenter's buffer (a running
    mean, used before it is updated) is averaged over the ranks each epoch, so with one step an
    epoch and equal shards the ranks take exactly one process's steps."""
    results = run_ranks("custom", tmp_path)
    assert_ranks_identical(results)
    net, opt, history = one_process("custom")
    np.testing.assert_allclose(results[0]["params"], bp.to_numpy(net.store.data), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0]["layer1.mu"], net.layers[1].mu, rtol=1e-12, atol=1e-15)
    assert_history_close(results[0]["history"], history.history, rtol=1e-10)


def test_nccl_communicator_through_the_double_equals_one_process(tmp_path):
    """fit over NcclCommunicator (unique id broadcast over MPI, in-place allReduce and bcast by raw
    address, count and dtype) gives one process's weights; the double moves the real bytes."""
    results = run_ranks("nccl_double:mean_float64", tmp_path)
    assert_ranks_identical(results)
    net, _, history = one_process("mean_float64")
    np.testing.assert_allclose(results[0]["params"], bp.to_numpy(net.store.data), rtol=1e-12, atol=1e-12)
    assert_history_close(results[0]["history"], history.history, rtol=1e-10)
    calls = [tuple(call) for call in json.loads(str(results[0]["nccl_calls"]))]
    size, float64 = net.num_parameters(), 8
    assert calls[0] == ("bcast", size, float64)  # the parameters from rank 0, then the per-step gradients
    steps = 3 * 6  # 183 training rows after the validation split: 6 batches of up to 32 rows
    assert calls.count(("allReduce", size, float64)) == steps


def _ranks_on_cupy_double_gpus(tmp_path, monkeypatch) -> list[dict]:
    """nccl_double:mean_float64 with rank r's network on cuda:r of the CuPy double (each rank
    starts with device 0 current, as every process does); the host builds of the kernels are
    made here once and shared with the ranks."""
    from backprop.kernels import loader
    import host_kernels

    host_kernels.build_all(loader.kernel_source(name) for name in loader.source_names())
    monkeypatch.setenv("BACKPROP_HOST_KERNELS_DIR", host_kernels._session_dir())
    results = run_ranks("nccl_double_cuda:mean_float64", tmp_path)
    net, _, _ = one_process("mean_float64")
    np.testing.assert_allclose(results[0]["params"], bp.to_numpy(net.store.data), rtol=1e-12, atol=1e-12)
    return results


def test_nccl_rank_1_on_cuda_1_of_the_cupy_double_runs_on_gpu_1_only(tmp_path, monkeypatch):
    results = _ranks_on_cupy_double_gpus(tmp_path, monkeypatch)
    assert [list(r.pop("work")) for r in results] == [[0], [1]]
    for result in results:
        result.pop("contexts")
    assert_ranks_identical(results)


def test_nccl_rank_1_creates_no_cuda_context_on_gpu_0(tmp_path, monkeypatch):
    """Since CUDA 12, making a device current creates its context, and `with Device(1)` makes 0
    current again on leaving: a context (hundreds of MB) on GPU 0 for every rank."""
    results = _ranks_on_cupy_double_gpus(tmp_path, monkeypatch)
    assert [list(r["contexts"]) for r in results] == [[0], [1]]


def test_nccl_is_chosen_for_cuda_networks(monkeypatch):
    built = []

    class Recorder:
        def __init__(self, device):
            built.append(device)

    class CudaNet:
        device = "cuda:1"

    monkeypatch.setattr(distributed, "NcclCommunicator", Recorder)
    monkeypatch.setattr(distributed, "_NCCL_COMMUNICATORS", {})
    first = distributed.communicator_for(CudaNet())
    assert isinstance(first, Recorder) and built == [1]
    assert distributed.communicator_for(CudaNet()) is first  # built once per device


def test_early_stopping_is_decided_once_for_all_ranks(tmp_path):
    """Rank 1's validation labels differ, so its own val_loss would stop it at another epoch (and
    leave rank 0 waiting); rank 0's numbers decide for both, exactly as one process on rank 0's data."""
    results = run_ranks("early_stopping", tmp_path)
    assert_ranks_identical(results)
    history = results[0]["history"]
    assert history["stopped_early"] and history["epochs"] < 30
    net, _, reference = one_process("early_stopping")
    assert history["epochs"] == reference.epochs and history["best_epoch"] == reference.best_epoch
    np.testing.assert_allclose(results[0]["params"], bp.to_numpy(net.store.data), rtol=1e-12, atol=1e-12)


def test_divergence_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """Only rank 1's loss becomes inf (its gradient stays finite); both ranks raise at batch 3
    and keep the weights after batch 2, as one process trained on 2 batches."""
    results = run_ranks("diverge_on_one_rank", tmp_path)
    assert_ranks_identical(results)
    assert results[0]["outcome"] == results[1]["outcome"] == "diverged at epoch 1, batch 3"
    net, opt, X, y, kwargs = build("diverge_on_one_rank")
    bp.fit(net, X[:32], y[:32], optimizer=opt, **{**kwargs, "epochs": 1})
    np.testing.assert_allclose(results[0]["params"], bp.to_numpy(net.store.data), rtol=1e-12, atol=1e-12)


def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    results = run_ranks("interrupt_on_one_rank", tmp_path)
    assert_ranks_identical(results)
    assert [r["outcome"] for r in results] == ["interrupted", "interrupted"]
    assert int(results[0]["steps"]) == int(results[1]["steps"]) == 3
    assert results[0]["history"]["interrupted"]


def _ghost_batch_step(case: str, shards: int = 2):
    """One SGD step of `case`'s 16-row batch as the docs say N ranks take it: shard r through a
    copy of the network seen as rank r (its own BatchNorm statistics, its own dropout seed), the
    gradients weighted by rows / batch rows and summed. Returns (parameters, running statistics)."""
    grads, stats = [], []
    for rank in range(shards):
        net, opt, X, y, kwargs = build(case)
        net.set_noise_seed(rank_noise_seed(net.seed, rank))
        rows = slice(rank * 16 // shards, (rank + 1) * 16 // shards)
        loss = kwargs["loss"]
        loss(net.forward(X[rows]), y[rows])
        net.backward(loss.backward())
        grads.append(bp.to_numpy(net.store.grad) * (rows.stop - rows.start) / 16)
        stats.append([layer.state() for layer in net.layers])
    params = bp.to_numpy(net.store.data) - opt.lr * np.sum(grads, axis=0)
    return params, stats


def test_batchnorm_normalizes_each_rank_with_its_own_shard(tmp_path):
    """Per-rank statistics: 2 ranks = one process with ghost batches of 8 rows, not one batch of 16;
    the running statistics are the ranks' mean, the same on both ranks."""
    results = run_ranks("batchnorm", tmp_path)
    assert_ranks_identical(results)
    params, stats = _ghost_batch_step("batchnorm")
    np.testing.assert_allclose(results[0]["params"], params, rtol=1e-12, atol=1e-12)
    for key in ("running_mean", "running_var"):
        expected = (stats[0][1][key] + stats[1][1][key]) / 2
        np.testing.assert_allclose(results[0][f"layer1.{key}"], expected, rtol=1e-12)
    net, _, _ = one_process("batchnorm")  # batch statistics over all 16 rows: a different step
    assert not np.allclose(results[0]["params"], bp.to_numpy(net.store.data), rtol=1e-6)


def test_dropout_draws_independent_masks_per_rank(tmp_path):
    """Rank r drops with rank_noise_seed(seed, r): rank 0 the one-process masks, rank 1 others; the
    step counters stay in step, and after fit every layer has the network's seed again."""
    results = run_ranks("dropout", tmp_path)
    assert_ranks_identical(results)
    params, _ = _ghost_batch_step("dropout")
    np.testing.assert_allclose(results[0]["params"], params, rtol=1e-12, atol=1e-12)
    net, _, _, _, _ = build("dropout")
    assert rank_noise_seed(net.seed, 1) != net.seed
    for result in results:
        assert int(result["layer1.step"]) == 1
        assert int(result["layer1.seed_after_fit"]) == net.seed


@pytest.mark.gpu
@pytest.mark.skipif(cuda_status()[0] == 0, reason="needs a GPU")
def test_nccl_on_real_gpus_equals_one_process(tmp_path):
    """As the double test, on CuPy arrays and the real NCCL: one rank per GPU (1 or 2 here)."""
    ranks = min(cuda_status()[0], 2)
    results = run_ranks("gpu:mean_float64", tmp_path, ranks=ranks)
    assert_ranks_identical(results)
    net, _, _ = one_process("mean_float64")
    np.testing.assert_allclose(results[0]["params"], bp.to_numpy(net.store.data), rtol=1e-9, atol=1e-9)


def test_command_line_on_two_ranks_prints_once_and_matches_one_process(tmp_path):
    """`mpirun -n 2 python -m backprop train --distributed`: rank 0 alone prints, and the test
    accuracy is one process's."""
    args = [sys.executable, "-m", "backprop", "train", "--device", "cpu", "--epochs", "3", "--hidden", "32"]
    single, _ = launch(args, cwd=tmp_path)  # train writes its run folder under the working directory
    on_ranks, _ = launch([MPIEXEC, "-n", "2", *args, "--distributed"], cwd=tmp_path)
    accuracy = [line for line in single.splitlines() if line.startswith("test accuracy")]
    assert len(accuracy) == 1
    assert [line for line in on_ranks.splitlines() if line.startswith("test accuracy")] == accuracy


def test_a_callbacks_stop_decided_on_rank_0_stops_every_rank(tmp_path):
    """Rank 0's callback asks to stop after epoch 2, rank 1's would after epoch 5: both ranks stop
    after epoch 2, with the same weights and history."""
    results = run_ranks("callback_stop", tmp_path)
    assert_ranks_identical(results)
    history = results[0]["history"]
    assert history["stopped_early"] and history["epochs"] == 2
    assert int(results[1]["epochs_trained"]) == 2
