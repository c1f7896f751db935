"""One model shared by many threads: the kernels release the GIL, so every
prediction must work in buffers of its own."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import fastbp


def _in_threads(function, inputs, threads=4):
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(function, inputs))


def _inputs(calls, n_in, seed=0):
    rng = np.random.default_rng(seed)
    # different sizes too, so that no call can borrow another's rows by luck
    return [rng.standard_normal((int(rng.integers(100, 300)), n_in)) for _ in range(calls)]


def test_predict_from_many_threads_matches_one_thread():
    model = fastbp.MLP([64, 256, 256, 10], seed=0)
    inputs = _inputs(48, 64)
    expected = [model.predict(x) for x in inputs]
    results = _in_threads(model.predict, inputs)
    wrong = [i for i, (got, want) in enumerate(zip(results, expected)) if not np.array_equal(got, want)]
    assert not wrong, f"{len(wrong)} of {len(inputs)} threaded predictions differ from the single-threaded ones"


def test_single_rows_from_many_threads_match_one_thread():
    # one or two rows of a wide network: dot products split between threads
    model = fastbp.MLP([300, 512, 512, 10], seed=0)
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((1 + i % 2, 300)) for i in range(64)]
    expected = [model.predict(x) for x in inputs]
    results = _in_threads(model.predict, inputs)
    assert all(np.array_equal(got, want) for got, want in zip(results, expected))


def test_evaluate_and_score_from_many_threads_match_one_thread():
    model = fastbp.MLP([64, 256, 256, 10], seed=0)
    trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), fastbp.SGD(model))
    inputs = _inputs(48, 64, seed=1)
    pairs = [(x, np.arange(len(x)) % 10) for x in inputs]
    expected = [(trainer.evaluate(x, y), trainer.score(x, y)) for x, y in pairs]
    results = _in_threads(lambda pair: (trainer.evaluate(*pair), trainer.score(*pair)), pairs)
    assert results == expected


def test_predict_leaves_the_cached_forward_pass_for_backward():
    model = fastbp.MLP([3, 5, 2], dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 3))
    model.forward(x)
    model.zero_grad()
    expected = model.backward(np.ones((4, 2)))
    model.forward(x)
    model.predict(np.ones((7, 3)))
    model.zero_grad()
    np.testing.assert_array_equal(model.backward(np.ones((4, 2))), expected)
