"""Data-parallel training: 2 processes over gloo on 127.0.0.1 against one
process on the same global batches (float64, 1e-10 relative)."""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import fastbp

pytest.importorskip("torch")
from fastbp.backends import distributed  # noqa: E402

# 72 samples in global batches of 16: four full steps and one of 8 per epoch
# (4 rows on each of 2 ranks), 4 epochs = 20 steps
N, BATCH, EPOCHS = 72, 16, 4
CONFIGS = [(optimizer, shuffle) for optimizer in ("sgd", "adam") for shuffle in (True, False)]


def _data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(N, 5)), rng.integers(0, 3, size=N)


def _train(trainer_class, optimizer, shuffle, model_seed=0, epochs=EPOCHS, sizes=(5, 7, 3), callbacks=None,
           weighted=False, **options):
    model = fastbp.MLP(list(sizes), activation="tanh", dtype="float64", seed=model_seed)
    opt = fastbp.SGD(model, lr=0.1, momentum=0.9) if optimizer == "sgd" else fastbp.Adam(model, lr=0.01)
    loss = fastbp.CrossEntropyLoss(weight=[1.0, 2.5, 0.5]) if weighted else "cross_entropy"
    trainer = trainer_class(model, loss, opt, max_grad_norm=1.0, **options)
    # weighted: unequal weights, and zeros, which leave rows out (66 of 72 rows: the last global batch is short)
    sample_weight = np.where(np.arange(N) % 12 == 5, 0.0, np.linspace(0.2, 3.0, N)) if weighted else None
    history = trainer.fit(*_data(), epochs=epochs, batch_size=BATCH, shuffle=shuffle, seed=3, callbacks=callbacks,
                          sample_weight=sample_weight)
    return model, opt, history


# a deeper model for the bucketed all-reduce: 4 layers of 48, 72, 63 and 24 parameters
DEEP = (5, 8, 8, 7, 3)
# bytes per bucket (float64): one bucket per layer, the last two layers then the first two, one for all
BUCKET_BYTES = [0, 8 * 80, 10 ** 9]


def worker(out, mode):
    """One rank's run; launched by the tests below as its own process."""
    rank, world_size = distributed.init(timeout=20.0)
    if mode in ("crash", "stall") and rank == 1:
        real, calls = distributed.stages.batch_gradients, []

        def failing(*args):
            calls.append(None)
            if len(calls) == 3:
                if mode == "stall":
                    time.sleep(90)
                raise RuntimeError("this rank fails on purpose")
            return real(*args)

        distributed.stages.batch_gradients = failing
    for optimizer, shuffle in CONFIGS if mode == "train" else CONFIGS[:1]:
        # a different seed per rank: the broadcast must make them start equal
        model, opt, history = _train(distributed.DistributedTrainer, optimizer, shuffle, model_seed=rank)
        np.save(os.path.join(out, f"{optimizer}-{shuffle}-{rank}.npy"), model._params)
        with open(os.path.join(out, f"{optimizer}-{shuffle}-{rank}.json"), "w") as f:
            json.dump({"loss": history.loss, "steps": opt.step_count}, f)
    if mode == "train":
        model, _, history = _train(distributed.DistributedTrainer, "adam", True, model_seed=rank, weighted=True)
        np.save(os.path.join(out, f"weighted-{rank}.npy"), model._params)
        _checkpoint_and_resume(out, rank)
        before = model._params.copy()
        trainer = distributed.DistributedTrainer(model, "cross_entropy", fastbp.SGD(model))
        try:
            trainer.fit(*_data(), batch_size=15)
        except ValueError as error:
            with open(os.path.join(out, f"odd-batch-{rank}.txt"), "w") as f:
                f.write(f"{error}\n{np.array_equal(before, model._params)}")
    if mode == "nonfinite":
        for on_nonfinite in ("skip", "raise"):
            model = _nonfinite_fit(distributed.DistributedTrainer, on_nonfinite, out, f"-{rank}")
            np.save(os.path.join(out, f"nonfinite-{on_nonfinite}-{rank}.npy"), model._params)
    if mode == "buckets":
        for bucket_bytes in [None] + BUCKET_BYTES:
            model, _, _ = _train(distributed.DistributedTrainer, "adam", True, model_seed=rank, sizes=DEEP,
                                 bucket_bytes=bucket_bytes)
            np.save(os.path.join(out, f"buckets-{bucket_bytes}-{rank}.npy"), model._params)
    distributed.shutdown()


def _checkpoint_and_resume(out, rank):
    """Half the epochs with rank 0 saving a checkpoint after each, then the
    rest from that checkpoint, every rank reading it."""
    import torch.distributed

    path = os.path.join(out, "checkpoint.npz")
    _train(distributed.DistributedTrainer, "adam", True, model_seed=rank, epochs=EPOCHS // 2,
           callbacks=[lambda trainer, logs: trainer.save(path)] if rank == 0 else None)
    torch.distributed.barrier()  # the checkpoint is whole before any rank reads it
    trainer = distributed.DistributedTrainer.load(path)
    trainer.fit(*_data(), epochs=EPOCHS - trainer.epoch, batch_size=BATCH, seed=None)
    np.save(os.path.join(out, f"resumed-{rank}.npy"), trainer.model._params)
    with open(os.path.join(out, f"resumed-{rank}.json"), "w") as f:
        json.dump({"class": type(trainer).__name__, "steps": trainer.optimizer.step_count}, f)


def _nonfinite_fit(trainer_class, on_nonfinite, out, suffix):
    """SGD on the data with one row that overflows (row 9: rank 1's, in the
    first global batch of each epoch); writes what the run reported."""
    X, y = _data()
    X[9] = np.finfo(np.float64).max
    model = fastbp.MLP([5, 7, 3], dtype="float64", seed=0)
    trainer = trainer_class(model, "cross_entropy", fastbp.SGD(model, lr=0.1))
    try:
        history = trainer.fit(X, y, epochs=2, batch_size=BATCH, shuffle=False, on_nonfinite=on_nonfinite)
        report = {"skipped": history.skipped, "loss": history.loss}
    except FloatingPointError as error:
        report = {"error": str(error)}
    report["steps"] = trainer.optimizer.step_count
    with open(os.path.join(out, f"nonfinite-{on_nonfinite}{suffix}.json"), "w") as f:
        json.dump(report, f)
    return model


def single_rank_worker(out):
    """One rank alone, counting the all-reduces; launched by a test below."""
    import torch.distributed

    distributed.init(timeout=10.0)
    real, sizes = torch.distributed.all_reduce, []

    def counted(tensor, *args, **kwargs):
        sizes.append(tensor.numel())
        return real(tensor, *args, **kwargs)

    torch.distributed.all_reduce = counted
    for optimizer, shuffle in CONFIGS:
        for trainer_class in (fastbp.Trainer, distributed.DistributedTrainer):
            sizes.clear()
            model, _, _ = _train(trainer_class, optimizer, shuffle)
            np.save(os.path.join(out, f"{trainer_class.__name__}-{optimizer}-{shuffle}.npy"), model._params)
        with open(os.path.join(out, f"all-reduces-{optimizer}-{shuffle}.json"), "w") as f:
            json.dump(sizes, f)
    distributed.shutdown()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out, mode, world_size=2, timeout=120, wait=None):
    """Start ``world_size`` ranks with the environment torchrun would set,
    wait for the first ``wait`` (all by default) and kill the others;
    returns [(returncode, stderr, seconds until it ended)] per rank waited for."""
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": str(world_size), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    code = (f"from tests.backends.test_distributed import single_rank_worker; single_rank_worker({str(out)!r})"
            if mode == "single" else f"from tests.backends.test_distributed import worker; worker({str(out)!r}, {mode!r})")
    start = time.perf_counter()
    ranks = [subprocess.Popen([sys.executable, "-c", code], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world_size)]
    results = []
    try:
        for rank in ranks[:wait]:
            _, stderr = rank.communicate(timeout=max(timeout - (time.perf_counter() - start), 1))
            results.append((rank.returncode, stderr, time.perf_counter() - start))
    finally:
        for rank in ranks:
            rank.kill()
    return results


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    for rank, (code, stderr, _) in enumerate(_launch(out, "train")):
        assert code == 0, f"rank {rank} failed:\n{stderr}"
    return out


@pytest.mark.parametrize("optimizer,shuffle", CONFIGS)
def test_two_ranks_match_one_process_on_the_global_batch(two_ranks, optimizer, shuffle):
    model, opt, history = _train(fastbp.Trainer, optimizer, shuffle)
    for rank in range(2):
        params = np.load(two_ranks / f"{optimizer}-{shuffle}-{rank}.npy")
        logs = json.loads((two_ranks / f"{optimizer}-{shuffle}-{rank}.json").read_text())
        assert logs["steps"] == opt.step_count == 20
        np.testing.assert_allclose(params, model._params, rtol=1e-10, atol=0)
        # no sample is repeated (72 splits evenly): the reduced loss is the whole epoch's
        np.testing.assert_allclose(logs["loss"], history.loss, rtol=1e-10, atol=0)


def test_two_ranks_train_weighted_as_one_process_on_the_global_batch(two_ranks):
    model, _, _ = _train(fastbp.Trainer, "adam", True, weighted=True)
    for rank in range(2):
        np.testing.assert_allclose(np.load(two_ranks / f"weighted-{rank}.npy"), model._params, rtol=1e-10, atol=0)


@pytest.mark.parametrize("optimizer,shuffle", CONFIGS)
def test_every_rank_ends_with_the_same_parameters(two_ranks, optimizer, shuffle):
    first, second = (np.load(two_ranks / f"{optimizer}-{shuffle}-{rank}.npy") for rank in range(2))
    np.testing.assert_array_equal(first, second)


def test_a_checkpoint_rank_0_saved_resumes_in_one_process_as_the_uninterrupted_run(two_ranks):
    model, opt, _ = _train(fastbp.Trainer, "adam", True)
    trainer = fastbp.Trainer.load(two_ranks / "checkpoint.npz")
    assert trainer.epoch == EPOCHS // 2
    trainer.fit(*_data(), epochs=EPOCHS - trainer.epoch, batch_size=BATCH, seed=None)
    assert trainer.optimizer.step_count == opt.step_count
    np.testing.assert_allclose(trainer.model._params, model._params, rtol=1e-10, atol=0)


def test_a_checkpoint_rank_0_saved_resumes_on_two_ranks_as_the_uninterrupted_run(two_ranks):
    model, opt, _ = _train(fastbp.Trainer, "adam", True)
    for rank in range(2):
        logs = json.loads((two_ranks / f"resumed-{rank}.json").read_text())
        assert logs == {"class": "DistributedTrainer", "steps": opt.step_count}
        np.testing.assert_allclose(np.load(two_ranks / f"resumed-{rank}.npy"), model._params, rtol=1e-10, atol=0)


def test_one_rank_trains_as_trainer_without_a_collective_per_step(tmp_path):
    [(code, stderr, _)] = _launch(tmp_path, "single", world_size=1, timeout=60)
    assert code == 0, stderr
    for optimizer, shuffle in CONFIGS:
        alone, one_rank = (np.load(tmp_path / f"{name}-{optimizer}-{shuffle}.npy")
                           for name in ("Trainer", "DistributedTrainer"))
        np.testing.assert_array_equal(one_rank, alone)
        # the ranks' agreement checks (the model's size when built, the data and
        # arguments when fit, a minimum and a maximum each), none per step
        sizes = json.loads((tmp_path / f"all-reduces-{optimizer}-{shuffle}.json").read_text())
        assert len(sizes) == 4, f"{len(sizes)} all-reduces of sizes {sizes}"


@pytest.fixture(scope="module")
def bucketed(tmp_path_factory):
    out = tmp_path_factory.mktemp("buckets")
    for rank, (code, stderr, _) in enumerate(_launch(out, "buckets", timeout=60)):
        assert code == 0, f"rank {rank} failed:\n{stderr}"
    return out


@pytest.mark.parametrize("bucket_bytes", BUCKET_BYTES)
def test_bucketed_all_reduce_gives_the_unbucketed_parameters(bucketed, bucket_bytes):
    unbucketed = np.load(bucketed / "buckets-None-0.npy")
    for rank in range(2):
        np.testing.assert_array_equal(np.load(bucketed / f"buckets-{bucket_bytes}-{rank}.npy"), unbucketed)


def test_bucketed_two_ranks_match_one_process(bucketed):
    model, _, _ = _train(fastbp.Trainer, "adam", True, sizes=DEEP)
    np.testing.assert_allclose(np.load(bucketed / "buckets-0-0.npy"), model._params, rtol=1e-10, atol=0)


@pytest.mark.parametrize("bucket_bytes,expected", [
    (0, [(3, 4, 183, 207), (2, 3, 120, 183), (1, 2, 48, 120), (0, 1, 0, 48)]),
    (8 * 80, [(2, 4, 120, 207), (0, 2, 0, 120)]),
    (8 * 87, [(2, 4, 120, 207), (0, 2, 0, 120)]),  # exactly the last two layers' bytes
    (8 * 88, [(1, 4, 48, 207), (0, 1, 0, 48)]),
    (10 ** 9, [(0, 4, 0, 207)]),
])
def test_buckets_group_layers_from_the_last(bucket_bytes, expected):
    layers = fastbp.MLP(list(DEEP), dtype="float64")._layers
    assert distributed.buckets(layers, 207, 8, bucket_bytes) == expected


@pytest.mark.parametrize("bucket_bytes", [-1, 2.5, "25MB"])
def test_bad_bucket_bytes_are_refused_before_anything_changes(bucket_bytes):
    model = fastbp.MLP([5, 7, 3], seed=0)
    with pytest.raises((TypeError, ValueError), match="bucket_bytes"):
        distributed.DistributedTrainer(model, "cross_entropy", fastbp.SGD(model), bucket_bytes=bucket_bytes)


def test_a_failing_rank_stops_the_other_with_a_clear_error(tmp_path):
    (code0, stderr0, seconds0), (code1, stderr1, _) = _launch(tmp_path, "crash", timeout=150)
    assert code1 != 0 and "this rank fails on purpose" in stderr1
    assert code0 != 0, "rank 0 should fail when rank 1 dies"
    assert "rank 0 of 2: the all-reduce at step 3 failed" in stderr0, stderr0
    print(f"rank 0 stopped {seconds0:.1f} s after launch:", stderr0.strip().splitlines()[-1])


def test_a_stalled_rank_makes_the_other_fail_after_the_timeout(tmp_path):
    # rank 1 stalls 90 s in its third step; rank 0 gives up after init's 20 s
    [(code0, stderr0, seconds0)] = _launch(tmp_path, "stall", timeout=150, wait=1)
    assert code0 != 0 and "rank 0 of 2: the all-reduce at step 3 failed" in stderr0, stderr0
    assert seconds0 < 75, f"rank 0 waited {seconds0:.0f} s for the stalled rank"
    print(f"rank 0 stopped {seconds0:.1f} s after launch:", stderr0.strip().splitlines()[-1])


def test_a_batch_the_ranks_cannot_split_evenly_is_refused(two_ranks):
    for rank in range(2):
        message, unchanged = (two_ranks / f"odd-batch-{rank}.txt").read_text().splitlines()
        assert "batch_size is the global batch and must be a multiple of the number of processes (2), got 15; " \
               "use 14 or 16" in message
        assert unchanged == "True"


@pytest.mark.parametrize("n,world_size", [(10, 2), (11, 2), (7, 3), (2, 4), (1, 1)])
def test_shard_splits_as_torchs_distributed_sampler(n, world_size):
    from torch.utils.data import DistributedSampler

    order = np.random.default_rng(0).permutation(n)
    for rank in range(world_size):
        sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=False)
        assert distributed.shard(order, rank, world_size).tolist() == [order[i] for i in sampler]


def test_init_outside_torchrun_says_how_to_launch(monkeypatch):
    for name in distributed._LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node"):
        distributed.init()


def test_fastbp_train_distributed_under_torchrun_matches_one_process(tmp_path):
    flags = ["train", "--quiet", "--save"]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "NUMBA_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "fastbp", *flags, str(tmp_path / "one.npz"), "--epochs", "2",
                          "--dtype", "float64"], capture_output=True, text=True, timeout=120, env=env)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    # one epoch across 2 processes, then a second resumed from the checkpoint rank 0 saved
    two = [subprocess.run([*torchrun, str(_free_port()), "-m", "fastbp", *flags, str(tmp_path / "two.npz"),
                           "--distributed", *more], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
           for more in (["--epochs", "1", "--dtype", "float64"],
                        ["--epochs", "2", "--resume", str(tmp_path / "two.npz")])]
    assert one.returncode == 0, one.stderr
    for run in two:
        assert run.returncode == 0, run.stderr
        # rank 0 alone prints: each line once
        assert run.stdout.count("model: MLP") == 1 and "across 2 processes" in run.stdout
    assert "resuming at epoch 1" in two[1].stdout
    best = [line for run in (one, two[1]) for line in run.stdout.splitlines() if line.startswith(("best", "test"))]
    assert best[:2] == best[2:], best
    np.testing.assert_allclose(fastbp.Trainer.load(tmp_path / "two.npz").model._params,
                               fastbp.Trainer.load(tmp_path / "one.npz").model._params, rtol=1e-10, atol=0)


def test_a_nonfinite_step_on_one_rank_stops_or_is_skipped_on_every_rank_alike(tmp_path):
    for rank, (code, stderr, _) in enumerate(_launch(tmp_path, "nonfinite")):
        assert code == 0, f"rank {rank} failed:\n{stderr}"
    for on_nonfinite in ("skip", "raise"):
        alone = _nonfinite_fit(fastbp.Trainer, on_nonfinite, tmp_path, "")
        expected = json.loads((tmp_path / f"nonfinite-{on_nonfinite}.json").read_text())
        for rank in range(2):
            report = json.loads((tmp_path / f"nonfinite-{on_nonfinite}-{rank}.json").read_text())
            assert report.keys() == expected.keys() and report["steps"] == expected["steps"], (report, expected)
            if on_nonfinite == "skip":
                assert report["skipped"] == expected["skipped"] == [1, 1]
                np.testing.assert_allclose(report["loss"], expected["loss"], rtol=1e-10)
            else:
                assert report["error"] == expected["error"] and "at step 1 (batch 1 of 5 in epoch 1)" in report["error"]
            np.testing.assert_allclose(np.load(tmp_path / f"nonfinite-{on_nonfinite}-{rank}.npy"), alone._params,
                                       rtol=1e-10, atol=1e-14)
