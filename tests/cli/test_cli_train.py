"""fastbp train: bad settings, resuming, the schedule of a resumed run, saving
and interrupting, and the top-level command."""
import os
import signal

import numba
import numpy as np
import pytest

import fastbp
from fastbp import cli
from fastbp.cli import settings, training
from tests.cli.test_cli import fastbp_cli

pytest.importorskip("sklearn.datasets")
SMALL = ["--quiet", "--hidden", "8"]


def train(capsys, *args):
    """``fastbp train ARGS`` in this process: (exit status, stdout, stderr)."""
    try:
        status = cli.main(["train", *map(str, args)])
    except SystemExit as stop:
        status = stop.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line(status, err, *parts):
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("fastbp: error: "), err
    for part in parts:
        assert part in err, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    y = rng.standard_normal(60)
    y[5] = np.nan
    np.savez(folder / "nan_target.npz", X=rng.standard_normal((60, 3)), y=y)
    np.savez(folder / "continuous.npz", X=rng.standard_normal((150, 4)), y=rng.standard_normal(150))
    return folder


@pytest.mark.parametrize("args, parts", [
    (["--max-grad-norm", "0"], ["--max-grad-norm", "got 0"]),
    (["--lr", "0"], ["--lr", "> 0", "got 0"]),
    (["--lr", "-1"], ["--lr", "got -1"]),
    (["--lr", "nan"], ["--lr", "got nan"]),
    (["--weight-decay", "-1"], ["--weight-decay", "got -1"]),
    (["--optimizer", "sgd", "--momentum", "2"], ["--momentum", "[0, 1)", "got 2"]),
    (["--optimizer", "rmsprop", "--momentum", "1"], ["--momentum", "[0, 1)", "got 1"]),
    (["--batch-size", "0"], ["--batch-size", "got 0"]),
    (["--val-split", "1"], ["--val-split", "got 1"]),
    (["--dtype", "float16"], ["--dtype", "'float16'"]),
    (["--epochs", "0"], ["--epochs 0 trains nothing"]),
    (["--optimizer", "lbfgs", "--lr", "0.1"], ["--lr does not apply to --optimizer lbfgs"]),
    (["--optimizer", "lbfgs", "--checkpoint-every", "5"], ["--optimizer lbfgs trains on the CPU in one process"]),
    (["--save-every", "0"], ["--save-every", "got 0"]),
    (["--dropout", "1"], ["--dropout", "[0, 1)", "got 1"]),
    (["--norm", "batch"], ["--norm", "'batch'"]),
    (["--optimizer", "lbfgs", "--dropout", "0.1"], ["--optimizer lbfgs needs a deterministic objective"]),
    (["--residual", "--hidden", "8,4"], ["--residual", "all equal, got 8,4"]),
    (["--data", "{files}/nan_target.npz"], ["--data", "targets", "NaN", "index (5, 0)"]),
    (["--data", "{files}/continuous.npz", "--task", "classify"], ["looks continuous", "--task regress"]),
])
def test_a_bad_setting_is_one_line_and_exit_2(args, parts, files, tmp_path, capsys):
    args = [a.replace("{files}", str(files)) for a in args]
    status, out, err = train(capsys, *SMALL, "--save", tmp_path / "m.npz", *args)
    assert_one_line(status, err, *parts)
    assert os.listdir(tmp_path) == []


def test_the_library_checks_settings_the_command_line_does_not(tmp_path, capsys):
    # training.train is the command line's engine: a value that only the library refuses is still one line
    given = dict.fromkeys(settings.DEFAULTS) | {"epochs": 1, "hidden": [8], "max_grad_norm": -1.0}
    with pytest.raises(fastbp.data.DataError, match=r"^--max-grad-norm must be a finite number in \(0.0, inf\]"):
        training.train(given, save=tmp_path / "m.npz", quiet=True)
    assert os.listdir(tmp_path) == []


def test_resume_on_data_of_another_width_names_both(tmp_path, capsys):
    assert train(capsys, *SMALL, "--epochs", 1, "--save", tmp_path / "m.npz")[0] == 0
    before = (tmp_path / "m.npz").read_bytes()
    status, out, err = train(capsys, "--resume", tmp_path / "m.npz", "--dataset", "iris", "--epochs", 2)
    assert_one_line(status, err, "iris has 4 features", "the checkpoint's model takes 64")
    assert (tmp_path / "m.npz").read_bytes() == before


def test_resume_beyond_the_planned_epochs_replans_the_schedule(tmp_path, capsys):
    assert train(capsys, *SMALL, "--epochs", 4, "--save", tmp_path / "m.npz")[0] == 0
    status, out, err = train(capsys, "--quiet", "--resume", tmp_path / "m.npz", "--epochs", 12,
                             "--save", tmp_path / "m.npz")
    assert status == 0, err
    assert "cosine schedule re-planned for 12 epochs" in out
    history = fastbp.Trainer.load(tmp_path / "m.npz").history
    # the rates a 12-epoch cosine run sets from epoch 5 on, down to 0 after the last
    expected = [1e-3 * (1 + np.cos(np.pi * e / 12)) / 2 for e in range(4, 12)]
    np.testing.assert_allclose(history.lr[4:], expected, rtol=1e-12)
    assert history.loss[-1] < 0.8 * history.loss[3]


def test_resume_with_a_new_rate_and_schedule(tmp_path, capsys):
    assert train(capsys, *SMALL, "--epochs", 3, "--save", tmp_path / "m.npz")[0] == 0
    status, out, err = train(capsys, "--quiet", "--resume", tmp_path / "m.npz", "--epochs", 9, "--lr", "0.002",
                             "--lr-schedule", "step", "--save", tmp_path / "m.npz")
    assert status == 0, err
    assert "new step schedule from lr 0.002 over epochs 4-9" in out
    history = fastbp.Trainer.load(tmp_path / "m.npz").history
    np.testing.assert_allclose(history.lr[3:], [0.002] * 2 + [0.0002] * 2 + [0.00002] * 2, rtol=1e-12)


def test_lbfgs_trains_full_batch_epochs_saves_predicts_and_resumes(tmp_path, capsys):
    status, out, err = train(capsys, *SMALL, "--optimizer", "lbfgs", "--weight-decay", "0.001", "--epochs", 5,
                             "--save", tmp_path / "m.npz")
    assert status == 0, err
    assert "lbfgs (weight decay 0.001), cross_entropy loss, full batch" in out
    trainer = fastbp.Trainer.load(tmp_path / "m.npz")
    assert isinstance(trainer.optimizer, fastbp.LBFGS) and trainer.epoch == 5
    losses = list(trainer.history.loss)
    # each iteration lowers the objective; with so small an L2 term, the data loss too
    assert losses == sorted(losses, reverse=True)
    status, out, err = train(capsys, "--quiet", "--resume", tmp_path / "m.npz", "--epochs", 8,
                             "--save", tmp_path / "m.npz")
    assert status == 0, err
    assert fastbp.Trainer.load(tmp_path / "m.npz").epoch == 8


def test_version_and_bare_command():
    status, out, err = fastbp_cli("--version")
    assert (status, out, err) == (0, f"fastbp {fastbp.__version__}\n", "")
    assert fastbp.__version__ == "0.1.0"
    status, out, err = fastbp_cli()
    assert status == 2 and "{train,predict,export,check,bench}" in out and "--version" in out
    assert err == "fastbp: error: choose a command: train, predict, export, check or bench\n"


def interrupt_at(monkeypatch, epoch):
    """Make the next fit send this process a SIGINT (a Ctrl-C) as ``epoch`` ends."""
    original_fit = fastbp.Trainer.fit

    def fit(self, *args, callbacks=(), **kwargs):
        def press(trainer, logs):
            if logs["epoch"] == epoch:
                os.kill(os.getpid(), signal.SIGINT)
        return original_fit(self, *args, callbacks=[press, *callbacks], **kwargs)
    monkeypatch.setattr(fastbp.Trainer, "fit", fit)


def test_ctrl_c_ends_the_epoch_saves_and_says_what_ran(tmp_path, monkeypatch, capsys):
    interrupt_at(monkeypatch, 3)
    status, out, err = train(capsys, *SMALL, "--epochs", 50, "--save", tmp_path / "m.npz")
    assert status == 130, err
    assert "best epoch 3 of 3 run (interrupted, 50 asked for): val_loss" in out, out
    assert f"fastbp: interrupted after epoch 3; {tmp_path / 'm.npz'} holds epoch 3: --resume" in err
    assert fastbp.Trainer.load(tmp_path / "m.npz").epoch == 3


def test_early_stopping_summary_says_how_many_ran(capsys):
    status, out, err = train(capsys, *SMALL, "--epochs", 200, "--early-stopping", 1)
    assert status == 0, err
    ran = int(out.split(" run (early stopping")[0].split(" of ")[-1])
    assert ran < 200 and f"of {ran} run (early stopping, 200 asked for): val_loss" in out
    assert "; its weights restored" in out


def _best_line(out):
    line = next(line for line in out.splitlines() if line.startswith("best epoch "))
    return int(line.split()[2]), line


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "balanced_accuracy"])
def test_the_run_keeps_and_scores_the_best_validation_epoch_of_its_metric(tmp_path, capsys, metric):
    status, out, err = train(capsys, *SMALL, "--epochs", 12, "--metric", metric, "--save", tmp_path / "m.npz")
    assert status == 0, err
    best, line = _best_line(out)
    trainer = fastbp.Trainer.load(tmp_path / "m.npz")
    history = trainer.history
    assert history.metric == metric and trainer.best_epoch == best and f"val_{metric}" in line
    values = history.val_metric
    top = min(values) if metric == "log_loss" else max(values)
    ties = [i for i, value in enumerate(values) if value == top]
    assert best == history.epoch[min(ties, key=lambda i: history.val_loss[i])]
    assert (best != 12) == ("its weights restored" in line)
    assert f"test {metric} " in out and "test accuracy " in out
    # the per-class report: a row per digit
    header = out.splitlines().index(next(row for row in out.splitlines() if row.startswith("class ")))
    assert [row.split()[0] for row in out.splitlines()[header + 1:header + 11]] == [str(d) for d in range(10)]


def test_no_restore_best_keeps_the_last_epoch(capsys):
    status, out, err = train(capsys, *SMALL, "--epochs", 12, "--no-restore-best")
    assert status == 0, err
    assert "its weights restored" not in _best_line(out)[1]


def test_regression_reports_its_metrics_in_the_targets_units(capsys):
    status, out, err = train(capsys, *SMALL, "--dataset", "diabetes", "--epochs", 5, "--metric", "mae")
    assert status == 0, err
    assert "val_mae" in _best_line(out)[1] and "of standardized targets" in _best_line(out)[1]
    line = next(line for line in out.splitlines() if line.startswith("test mae "))
    assert "r2 " in line and "rmse " in line and "in the target's units" in line
    assert float(line.split()[2]) > 5  # diabetes targets run from 25 to 346: not standardized units


def test_a_metric_of_the_other_task_exits_2_naming_it(capsys):
    status, out, err = train(capsys, *SMALL, "--metric", "rmse", "--epochs", 1)
    assert status == 2 and "--metric rmse does not fit the task classify; use one of accuracy" in err


def test_save_every_and_the_cheap_default(tmp_path, monkeypatch, capsys):
    written = []
    original_save = fastbp.Trainer.save
    monkeypatch.setattr(fastbp.Trainer, "save", lambda self, path: (written.append(self.epoch),
                                                                     original_save(self, path)))
    assert train(capsys, *SMALL, "--epochs", 5, "--save", tmp_path / "m.npz", "--save-every", 2)[0] == 0
    assert written == [2, 4, 5]
    written.clear()
    assert train(capsys, *SMALL, "--epochs", 5, "--save", tmp_path / "m.npz")[0] == 0
    assert written == [5]  # a few seconds apart at most, and always at the end


def test_a_cold_compile_cache_is_announced_before_compiling(capsys, monkeypatch):
    # a function Numba has never compiled stands in for a kernel with no cached machine code
    @numba.njit
    def fresh(x):
        return x + 1
    original_fit = fastbp.Trainer.fit

    def fit(self, *args, **kwargs):
        print("fit starts", file=__import__("sys").stderr)
        fresh(1)
        return original_fit(self, *args, **kwargs)
    monkeypatch.setattr(fastbp.Trainer, "fit", fit)
    status, out, err = train(capsys, *SMALL, "--epochs", 1)
    assert status == 0 and err == "fit starts\ncompiling kernels (first run only; cached after)\n", err
    status, out, err = train(capsys, *SMALL, "--epochs", 1)
    assert status == 0 and err == "fit starts\n", err


def test_a_nonfinite_batch_stops_the_run_or_is_skipped(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    X[10] = np.finfo(np.float32).max  # finite; its products overflow
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", rng.integers(0, 2, 64))
    common = ["--data", tmp_path / "X.npy", "--target", tmp_path / "y.npy", "--no-standardize", "--val-split", 0,
              "--test-split", 0, "--batch-size", 8, "--epochs", 2, *SMALL]
    status, out, err = train(capsys, *common)
    assert status == 1 and "training diverged at step" in err and "holds NaN or infinity" in err, err
    status, out, err = train(capsys, *common, "--on-nonfinite", "skip", "--save", tmp_path / "run.npz")
    assert status == 0, err
    assert fastbp.Trainer.load(tmp_path / "run.npz").history.skipped == [1, 1]


@pytest.fixture(scope="module")
def weighted_csv(tmp_path_factory):
    rng = np.random.default_rng(1)
    n = 200
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    label = np.where(a + 0.5 * b > 1.0, "rare", "common")
    weight = np.where(np.arange(n) % 7 == 0, 0.0, rng.random(n) + 0.5)
    path = tmp_path_factory.mktemp("weighted") / "weighted.csv"
    lines = ["a,b,label,w"] + [f"{x:.6f},{y:.6f},{c},{v:.6f}" for x, y, c, v in zip(a, b, label, weight)]
    path.write_text("\n".join(lines) + "\n")
    return path, weight


def test_dropout_and_norm_train_save_and_resume(tmp_path, capsys):
    checkpoint = tmp_path / "m.ckpt"
    status, out, err = train(capsys, "--dataset", "iris", "--hidden", "8,8", "--dropout", "0.1", "--norm", "layer",
                             "--epochs", 2, "--save", checkpoint)
    assert status == 0, err
    assert "MLP [4, 8, 8, 3] relu, layer norm, dropout 0.1," in out
    trainer = fastbp.load_checkpoint(checkpoint)
    assert (trainer.model.norm, trainer.model.dropout) == ("layer", (0.1, 0.1))
    status, out, err = train(capsys, "--resume", checkpoint, "--epochs", 3, "--quiet", "--save", checkpoint)
    assert status == 0, err
    assert fastbp.load_checkpoint(checkpoint).epoch == 3
    status, out, err = train(capsys, "--resume", checkpoint, "--epochs", 4, "--dropout", "0.2")
    assert_one_line(status, err, "--dropout cannot be combined with --resume")
    status, out, err = train(capsys, "--dataset", "iris", "--hidden", "8,8", "--residual", "--epochs", 1,
                             "--save", tmp_path / "r.npz")
    assert status == 0, err
    assert "MLP [4, 8, 8, 3] relu, residual blocks," in out
    assert fastbp.load_checkpoint(tmp_path / "r.npz").model.residual


def test_sample_weight_and_class_weight_train_weighted_and_resume(weighted_csv, tmp_path, capsys):
    path, _ = weighted_csv
    checkpoint = tmp_path / "w.ckpt"
    args = ["--data", path, "--target", "label", "--sample-weight", "w", "--class-weight", "balanced", *SMALL]
    status, out, err = train(capsys, *args, "--epochs", 2, "--save", checkpoint)
    assert status == 0, err
    assert "weighted by column 'w', balanced class weights" in out and "(weighted)" in out
    assert "3 features" not in out and "2 features" in out  # the weight column is no feature
    trainer = fastbp.load_checkpoint(checkpoint)
    assert trainer.metadata["settings"]["sample_weight"] == "w"
    # the loss carries its class weights; "rare" (class 1) weighs more
    assert len(trainer.loss.arguments()["weight"]) == 2
    assert trainer.loss.class_weights[1] > trainer.loss.class_weights[0]
    status, out, err = train(capsys, "--resume", checkpoint, "--data", path, "--target", "label", "--epochs", 3,
                             "--quiet")
    assert status == 0, err


def test_weighted_training_weighs_the_training_rows(weighted_csv, tmp_path, capsys, monkeypatch):
    path, weight = weighted_csv
    seen = {}
    fit = fastbp.Trainer.fit

    def spy(self, X, y, **kwargs):
        seen["weights"], seen["validation"] = kwargs.get("sample_weight"), kwargs.get("validation_data")
        return fit(self, X, y, **kwargs)
    monkeypatch.setattr(fastbp.Trainer, "fit", spy)
    status, _, err = train(capsys, "--data", path, "--target", "label", "--sample-weight", "w", "--epochs", 1,
                           *SMALL)
    assert status == 0, err
    order = np.random.default_rng(0).permutation(len(weight))
    n_test, n_val = int(round(0.2 * len(weight))), int(round(0.1 * len(weight)))
    # read as the run's float32 columns are
    np.testing.assert_allclose(seen["weights"], weight[order[n_test + n_val:]], rtol=1e-6)
    np.testing.assert_allclose(seen["validation"][2], weight[order[n_test:n_test + n_val]], rtol=1e-6)


@pytest.mark.parametrize("args, parts", [
    (["--sample-weight", "nope"], ["--sample-weight", "no column 'nope'"]),
    (["--sample-weight", "label"], ["--sample-weight", "no column 'label' other than the target"]),
    (["--class-weight", "balanced", "--loss", "bce_with_logits"], ["--class-weight", "not bce_with_logits"]),
])
def test_bad_weights_are_one_line_and_exit_2(weighted_csv, args, parts, capsys):
    path, _ = weighted_csv
    status, _, err = train(capsys, "--data", path, "--target", "label", "--epochs", 1, *SMALL, *args)
    assert_one_line(status, err, *parts)


def test_a_negative_or_missing_weight_is_refused(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("a,label,w\n1,0,1\n2,1,-1\n3,0,2\n4,1,1\n5,0,1\n")
    status, _, err = train(capsys, "--data", path, "--target", "label", "--sample-weight", "w", *SMALL)
    assert_one_line(status, err, "--sample-weight", "finite weights >= 0", "got -1 in row 1")
    path.write_text("a,label,w\n1,0,1\n2,1,\n3,0,2\n4,1,1\n5,0,1\n")
    status, _, err = train(capsys, "--data", path, "--target", "label", "--sample-weight", "w", *SMALL)
    assert_one_line(status, err, "--sample-weight", "missing in 1 rows")
    status, _, err = train(capsys, "--sample-weight", "w", *SMALL)
    assert_one_line(status, err, "--sample-weight names a column of a CSV or Parquet file")
