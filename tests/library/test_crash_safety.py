"""Checkpoints every N optimizer steps: a run stopped anywhere, even killed
with SIGKILL in the middle of an epoch, resumes from its last checkpoint and
ends bit for bit as the run that never stopped."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastbp

# 61 samples in batches of 8: 7 full batches and one of 5 per epoch
N_SAMPLES, BATCH = 61, 8


def data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_SAMPLES, 5))
    return X, np.argmax(X[:, :3] + 0.3 * rng.standard_normal((N_SAMPLES, 3)), axis=1)


def make_trainer(dtype):
    model = fastbp.MLP([5, 12, 3], activation="tanh", dtype=dtype, seed=1)
    optimizer = fastbp.Adam(model, lr=0.01)
    return fastbp.Trainer(model, fastbp.CrossEntropyLoss(), optimizer,
                          schedule=fastbp.StepLR(optimizer, step_size=2, gamma=0.5))


def fit(trainer, epochs, **kwargs):
    X, y = data()
    return trainer.fit(X[:50], y[:50], epochs=epochs, batch_size=BATCH, validation_data=(X[50:], y[50:]),
                       **kwargs)


def rows(history):
    """The history without the wall-clock times."""
    return {key: value for key, value in history.as_dict().items() if key != "seconds"}


class Stop(Exception):
    pass


class StopsAfterSaving(fastbp.Trainer):
    """A trainer whose run ends right after its ``stop_at``-th checkpoint, as
    if the process died there."""

    stop_at, saved = None, 0

    def save(self, path):
        super().save(path)
        self.saved += 1
        if self.saved == self.stop_at:
            raise Stop


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("every, stop_at", [(3, 1), (3, 5), (4, 2), (4, 7), (5, 6), (7, 2), (1, 13)])
def test_a_run_stopped_after_any_checkpoint_resumes_bit_for_bit(tmp_path, dtype, every, stop_at):
    reference = make_trainer(dtype)
    fit(reference, 5, seed=7)
    stopped = make_trainer(dtype)
    stopped.__class__, stopped.stop_at = StopsAfterSaving, stop_at
    with pytest.raises(Stop):
        fit(stopped, 5, seed=7, checkpoint_every=every, checkpoint_path=tmp_path / "ck.npz")
    assert stopped.optimizer.step_count == every * stop_at
    resumed = fastbp.Trainer.load(tmp_path / "ck.npz")
    assert resumed.optimizer.step_count == every * stop_at
    fit(resumed, 5 - resumed.epoch)
    np.testing.assert_array_equal(resumed.model._params, reference.model._params)
    assert resumed.optimizer.step_count == reference.optimizer.step_count
    assert rows(resumed.history) == rows(reference.history)
    assert resumed.optimizer.lr == reference.optimizer.lr


def test_checkpoints_do_not_change_the_run(tmp_path):
    reference, checkpointed = make_trainer("float32"), make_trainer("float32")
    fit(reference, 3, seed=4)
    fit(checkpointed, 3, seed=4, checkpoint_every=3, checkpoint_path=tmp_path / "ck.npz")
    np.testing.assert_array_equal(checkpointed.model._params, reference.model._params)
    assert rows(checkpointed.history) == rows(reference.history)
    # 24 steps: the last checkpoint is the end of the run
    np.testing.assert_array_equal(fastbp.load(tmp_path / "ck.npz")._params, reference.model._params)


def test_a_mid_epoch_checkpoint_is_continued_only_as_it_was_written(tmp_path):
    trainer = make_trainer("float64")
    trainer.__class__, trainer.stop_at = StopsAfterSaving, 1
    with pytest.raises(Stop):
        fit(trainer, 2, checkpoint_every=2, checkpoint_path=tmp_path / "ck.npz")
    resumed = fastbp.Trainer.load(tmp_path / "ck.npz")
    before = resumed.model._params.copy()
    X, y = data()
    with pytest.raises(ValueError, match=r"batch_size=16: .* batches of 8; continue with batch_size=8"):
        resumed.fit(X[:50], y[:50], epochs=1, batch_size=16)
    with pytest.raises(ValueError, match=r"X: 40 samples.* of 50.* same 50 training samples"):
        resumed.fit(X[:40], y[:40], epochs=1, batch_size=BATCH)
    with pytest.raises(ValueError, match="seed=3: .* seed=None"):
        resumed.fit(X[:50], y[:50], epochs=1, batch_size=BATCH, seed=3)
    with pytest.raises(ValueError, match="shuffle=False: .* shuffle=True"):
        resumed.fit(X[:50], y[:50], epochs=1, batch_size=BATCH, shuffle=False)
    np.testing.assert_array_equal(resumed.model._params, before)
    assert resumed.optimizer.step_count == 2


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(checkpoint_every=0, checkpoint_path="ck.npz"), ValueError, "checkpoint_every must be"),
    (dict(checkpoint_every=2.5, checkpoint_path="ck.npz"), TypeError, "checkpoint_every must be"),
    (dict(checkpoint_every=2), ValueError, "checkpoint_every=2 needs checkpoint_path"),
    (dict(checkpoint_path="ck.npz"), ValueError, "checkpoint_path needs checkpoint_every"),
    (dict(checkpoint_every=2, checkpoint_path="no/such/folder/ck.npz"), ValueError, "folder"),
])
def test_bad_checkpoint_arguments_are_refused_before_training(tmp_path, monkeypatch, kwargs, error, message):
    monkeypatch.chdir(tmp_path)
    trainer = make_trainer("float64")
    before = trainer.model._params.copy()
    with pytest.raises(error, match=message):
        fit(trainer, 1, **kwargs)
    np.testing.assert_array_equal(trainer.model._params, before)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("keep", [0.3, 0.7, 0.99])
def test_a_truncated_checkpoint_is_reported_never_loaded(tmp_path, keep):
    trainer = make_trainer("float32")
    trainer.__class__, trainer.stop_at = StopsAfterSaving, 2
    with pytest.raises(Stop):
        fit(trainer, 2, checkpoint_every=3, checkpoint_path=tmp_path / "ck.npz")
    whole = (tmp_path / "ck.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[:int(len(whole) * keep)])
    with pytest.raises(ValueError, match="cut.npz.* is not a readable fastbp checkpoint file"):
        fastbp.Trainer.load(tmp_path / "cut.npz")
    result = subprocess.run([sys.executable, "-m", "fastbp", "train", "--resume", str(tmp_path / "cut.npz")],
                            capture_output=True, text=True, timeout=300) if keep == 0.7 else None
    if result is not None:
        assert result.returncode == 2
        assert "--resume: " in result.stderr and "is not a readable fastbp checkpoint file" in result.stderr


def cli(*arguments):
    return [sys.executable, "-m", "fastbp", "train", "--epochs", "60", "--batch-size", "50", "--quiet",
            *map(str, arguments)]


def fresh(dtype):
    return ["--dataset", "digits", "--hidden", "24", "--optimizer", "adam", "--lr-schedule", "step", "--dtype", dtype]


def saved(path):
    with np.load(path) as archive:
        return archive["params"], archive["optimizer_step"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_cli_run_killed_with_sigkill_resumes_bit_for_bit(tmp_path, dtype):
    """Four SIGKILLs at random moments, each followed by --resume; 1258
    training samples in batches of 50 end each epoch on a batch of 8."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(),
                                                                             os.environ.get("PYTHONPATH")]))}
    subprocess.run(cli(*fresh(dtype), "--save", tmp_path / "reference.npz"), check=True, timeout=300,
                   env=environment, capture_output=True)
    checkpoint, pick = tmp_path / "ck.npz", random.Random(dtype)
    kills = 0
    for attempt in range(4):
        resume = ["--resume", checkpoint] if checkpoint.exists() else fresh(dtype)
        before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
        process = subprocess.Popen(cli("--checkpoint-every", 2, "--save", checkpoint, *resume), env=environment,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        # wait for this process's first checkpoint, then kill it a random moment later
        while not checkpoint.exists() or checkpoint.stat().st_mtime_ns == before:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint written in 60 s"
            time.sleep(0.005)
        time.sleep(pick.uniform(0.0, 0.3))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=300)
        process.stderr.close()
        # what the next run goes on from: the middle of an epoch, its order drawn again
        assert fastbp.Trainer.load(checkpoint)._epoch_state is not None
    assert kills >= 3
    subprocess.run(cli("--checkpoint-every", 2, "--save", checkpoint, "--resume", checkpoint), check=True,
                   timeout=300, env=environment, capture_output=True)
    (params, steps), (reference_params, reference_steps) = saved(checkpoint), saved(tmp_path / "reference.npz")
    assert steps == reference_steps
    np.testing.assert_array_equal(params, reference_params)
    assert (rows(fastbp.Trainer.load(checkpoint).history)
            == rows(fastbp.Trainer.load(tmp_path / "reference.npz").history))


def test_cli_checkpoint_every_needs_save_and_a_mid_epoch_resume_keeps_its_batch_size(tmp_path, capsys):
    from fastbp.cli import main

    assert main(["train", "--epochs", "1", "--checkpoint-every", "5"]) == 2
    assert "--checkpoint-every 5 needs --save PATH" in capsys.readouterr().err
    trainer = make_trainer("float64")
    trainer.__class__, trainer.stop_at = StopsAfterSaving, 1
    trainer.metadata = {"settings": {}, "preprocessing": {}}
    with pytest.raises(Stop):
        fit(trainer, 1, checkpoint_every=3, checkpoint_path=tmp_path / "ck.npz")
    before = (tmp_path / "ck.npz").read_bytes()
    assert main(["train", "--resume", str(tmp_path / "ck.npz"), "--epochs", "2", "--batch-size", "16",
                 "--save", str(tmp_path / "ck.npz")]) == 2
    assert ("--batch-size 16: the checkpoint stopped in the middle of epoch 1, in batches of 8; resume with "
            "--batch-size 8") in capsys.readouterr().err
    assert (tmp_path / "ck.npz").read_bytes() == before


def test_cli_mid_epoch_resume_on_other_data_is_refused(tmp_path, capsys):
    from fastbp.cli import main

    checkpoint = str(tmp_path / "ck.npz")
    assert main(["train", *fresh("float32"), "--epochs", "1", "--quiet", "--save", checkpoint]) == 0
    trainer = fastbp.Trainer.load(checkpoint)
    trainer._epoch_state = {"rng_state": trainer._rng_state.copy(), "position": 100, "loss_sum": 1.0,
                            "batch_size": 64, "n_samples": 1000, "shuffle": True}
    trainer.save(checkpoint)
    before = (tmp_path / "ck.npz").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", checkpoint, "--epochs", "2", "--save", checkpoint]) == 2
    assert ("gives 1258 training samples, but the checkpoint stopped in the middle of an epoch over 1000; "
            "resume on the data it was trained on") in capsys.readouterr().err
    assert (tmp_path / "ck.npz").read_bytes() == before
