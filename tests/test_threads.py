"""One network, several threads: concurrent inference (predict, evaluate, an eval-mode forward)
is correct; training while another thread uses the network is refused with a clear error, from
whichever side comes second; backward needs this thread's own forward."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import backprop as bp

rng = np.random.default_rng(0)
X = rng.normal(size=(512, 16))
Y = rng.integers(0, 5, size=512)


def make():
    net = bp.Sequential(bp.Dense(16, 64, activation="relu"), bp.BatchNorm(64), bp.Dropout(0.2),
                        bp.Dense(64, 32, activation="tanh"), bp.Dense(32, 5), seed=0)
    bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), epochs=1, batch_size=64, progress=False)
    return net


def run_threads(target, count: int) -> list:
    """Run target(i) in `count` threads started together; their results (or exceptions)."""
    results: list = [None] * count
    barrier = threading.Barrier(count)

    def work(i):
        barrier.wait()
        try:
            results[i] = target(i)
        except BaseException as exc:  # reported to the test, not lost in the thread
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_predictions_are_each_threads_own():
    """Each thread predicts its own rows in small batches, many times: every answer equals the
    one-thread answer (with shared workspaces, threads got each other's activations)."""
    net = make()
    rows = [X[i::4] for i in range(4)]
    expected = [bp.predict(net, r, batch_size=8) for r in rows]

    def predict_many(i):
        return [bp.predict(net, rows[i], batch_size=8) for _ in range(20)]

    for i, outputs in enumerate(run_threads(predict_many, 4)):
        assert not isinstance(outputs, BaseException), outputs
        for out in outputs:
            np.testing.assert_array_equal(out, expected[i])


def test_concurrent_evaluate_and_eval_mode_forward_are_correct():
    net = make().eval()
    expected_metrics = bp.evaluate(net, X, Y, loss=bp.CrossEntropyLoss(), batch_size=16)
    expected_out = bp.to_numpy(net(X[:32]))

    def work(i):
        if i % 2:
            return [bp.evaluate(net, X, Y, loss=bp.CrossEntropyLoss(), batch_size=16) for _ in range(5)]
        return [bp.to_numpy(net(X[:32])) for _ in range(20)]

    for i, results in enumerate(run_threads(work, 4)):
        assert not isinstance(results, BaseException), results
        for got in results:
            if i % 2:
                assert got == expected_metrics
            else:
                np.testing.assert_array_equal(got, expected_out)


def test_predict_during_another_threads_fit_is_refused():
    net = make()
    seen = []

    class PredictFromAnotherThread(bp.Callback):
        def on_batch_end(self):
            if not seen:
                seen.extend(run_threads(lambda i: bp.predict(net, X[:4]), 1))

    bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), epochs=1, batch_size=64, progress=False,
           callbacks=[PredictFromAnotherThread()])
    (error,) = seen
    assert isinstance(error, RuntimeError), error
    assert "inference refused: another thread is training this network (fit)" in str(error)
    assert bp.predict(net, X[:4]).shape == (4, 5)  # fine once fit is done


def test_fit_while_another_thread_predicts_is_refused_before_anything_changes():
    """A layer that holds the predicting thread inside its forward until fit has been tried."""
    inside, release = threading.Event(), threading.Event()

    @bp.register_layer(name="tests.Hold")
    class Hold(bp.Layer):
        def forward(self, x, training):
            if not training and threading.current_thread() is not threading.main_thread():
                inside.set()
                release.wait(10)
            return x

        def backward(self, grad_y, need_input_grad):
            return grad_y

    net = bp.Sequential(bp.Dense(16, 8, activation="relu"), Hold(), bp.Dense(8, 5), seed=0)
    weights = net.store.data.copy()
    predictor = threading.Thread(target=bp.predict, args=(net, X[:4]))
    predictor.start()
    try:
        assert inside.wait(10)
        opt = bp.SGD(net.parameters(), lr=0.1)
        for train in (lambda: bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), epochs=1, progress=False),
                      opt.step, lambda: net.train()(X[:4])):
            with pytest.raises(RuntimeError, match="refused: another thread is running inference on this network"):
                train()
        np.testing.assert_array_equal(net.store.data, weights)
        assert opt.step_count == 0  # the refused step is not counted
    finally:
        release.set()
        predictor.join()
    bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), epochs=1, progress=False)  # and allowed afterwards


def test_backward_after_another_threads_forward_is_refused():
    net = make().train()
    loss = bp.CrossEntropyLoss()
    loss(net(X[:8]), Y[:8])
    (error,) = run_threads(lambda i: net.backward(loss.backward()), 1)
    assert isinstance(error, RuntimeError) and "the latest forward ran in another thread" in str(error)
    net.backward(loss.backward())  # the thread that ran the forward may


def test_two_threads_training_one_network_are_refused():
    net = make()
    started, release = threading.Event(), threading.Event()

    class Pause(bp.Callback):
        def on_batch_end(self):
            if threading.current_thread() is not threading.main_thread() and not started.is_set():
                started.set()
                release.wait(10)

    trainer = threading.Thread(target=bp.fit, args=(net, X, Y),
                               kwargs=dict(loss=bp.CrossEntropyLoss(), epochs=1, progress=False, callbacks=[Pause()]))
    trainer.start()
    try:
        assert started.wait(10)
        with pytest.raises(RuntimeError, match=r"fit refused: another thread is training this network \(fit\)"):
            bp.fit(net, X, Y, loss=bp.CrossEntropyLoss(), epochs=1, progress=False)
    finally:
        release.set()
        trainer.join()


def test_a_users_own_layer_written_as_the_readme_shows_predicts_correctly_from_several_threads():
    from readme_extensions import Recenter

    net = bp.Sequential(bp.Dense(16, 8, activation="softsign"), Recenter(), bp.Dense(8, 5), seed=0)
    bp.fit(net, X, rng.normal(size=(512, 5)), loss=bp.MSELoss(), epochs=1, progress=False)
    rows = [X[i::4][:16] for i in range(4)]
    expected = [bp.to_numpy(net(r)) for r in rows]

    def forward_many(i):
        return [bp.to_numpy(net(rows[i])) for _ in range(300)]

    for i, outputs in enumerate(run_threads(forward_many, 4)):
        assert not isinstance(outputs, BaseException), outputs
        for out in outputs:
            np.testing.assert_array_equal(out, expected[i])


def test_saving_copying_and_changing_a_network_another_thread_trains_are_refused(tmp_path):
    """A checkpoint, a pickle or a gradient check of a network under training would read half an
    update; an assignment or zero_grad would write under it."""
    import pickle

    net = make()
    opt = bp.SGD(net.parameters(), lr=0.1)
    started, release = threading.Event(), threading.Event()

    class Pause(bp.Callback):
        def on_batch_end(self):
            if not started.is_set():
                started.set()
                release.wait(10)

    trainer = threading.Thread(target=bp.fit, args=(net, X, Y),
                               kwargs=dict(loss=bp.CrossEntropyLoss(), optimizer=opt, epochs=1, progress=False,
                                           callbacks=[Pause()]))
    trainer.start()
    try:
        assert started.wait(10)
        for read in (lambda: bp.save(net, tmp_path / "m.safetensors"), lambda: pickle.dumps(net),
                     lambda: bp.gradcheck(net, bp.CrossEntropyLoss(), X[:2], Y[:2])):
            with pytest.raises(RuntimeError, match=r"inference refused: another thread is training this network \(fit\)"):
                read()
        for write in (opt.zero_grad, lambda: setattr(net.layers[0].bias, "data", np.zeros(64))):
            with pytest.raises(RuntimeError, match=r"refused: another thread is training this network \(fit\)"):
                write()
    finally:
        release.set()
        trainer.join()
    assert not list(tmp_path.iterdir())


def test_changing_the_optimizer_or_its_schedule_while_another_thread_trains_with_them_is_refused():
    """load_state and a schedule's step() replace the state and the lr that fit's steps read."""
    net = make()
    opt = bp.Adam(net.parameters(), lr=0.01)
    sched = bp.StepLR(opt, step_size=1, gamma=0.5)
    started, release = threading.Event(), threading.Event()

    class Pause(bp.Callback):
        def on_batch_end(self):
            if not started.is_set():
                started.set()
                release.wait(10)

    trainer = threading.Thread(target=bp.fit, args=(net, X, Y),
                               kwargs=dict(loss=bp.CrossEntropyLoss(), optimizer=opt, scheduler=sched, epochs=1,
                                           progress=False, callbacks=[Pause()]))
    trainer.start()
    try:
        assert started.wait(10)
        before = (opt.lr, opt.step_count, sched.epoch, {k: v.copy() for k, v in opt.state_arrays().items()})
        zeros = {name: np.zeros(net.num_parameters()) for name in opt.state_names}
        for change, what in ((lambda: opt.load_state(0, zeros), r"optimizer.load_state\(\)"),
                             (sched.step, r"a schedule's step\(\)")):
            with pytest.raises(RuntimeError, match=rf"{what} refused: another thread is training this network \(fit\)"):
                change()
        after = (opt.lr, opt.step_count, sched.epoch, opt.state_arrays())
        assert after[:3] == before[:3]
        for name, values in before[3].items():
            np.testing.assert_array_equal(after[3][name], values)
    finally:
        release.set()
        trainer.join()
    assert sched.epoch == 1  # fit stepped it once, from its own thread
    sched.step()  # and it is the caller's again once fit is done
    opt.load_state(0, zeros)
