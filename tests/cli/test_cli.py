"""The command line: fastbp train / predict / check, as a user runs them."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import cli
from fastbp.cli import progress, settings, training

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def fastbp_cli(*args, cwd=None):
    """Run the console entry point in a subprocess: (exit status, stdout, stderr)."""
    result = subprocess.run([sys.executable, "-m", "fastbp", *map(str, args)], capture_output=True, text=True,
                            cwd=cwd, timeout=600, env={**os.environ, "PYTHONPATH": os.getcwd()})
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    X, y = sklearn_datasets.load_digits(return_X_y=True)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    with open(folder / "digits.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([f"pixel{i}" for i in range(64)] + ["digit"])
        writer.writerows([list(row) + [names[label]] for row, label in zip(X, y)])
    np.savez(folder / "digits.npz", X=X, y=y)
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    return folder


def test_train_with_no_arguments_learns_the_digits(tmp_path):
    status, out, err = fastbp_cli("train", "--plot", tmp_path / "h.png", "--save", tmp_path / "m.npz")
    assert status == 0, err
    assert "digits: 1797 samples, 64 features, 10 classes; train/val/test 1258/180/359" in out
    accuracy = float(out.split("test accuracy ")[1].split()[0])
    assert accuracy >= 0.97, out
    assert "epoch 30/30" in out and "val_accuracy" in out and "samples/s" in out and "best epoch" in out
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    trainer = fastbp.Trainer.load(tmp_path / "m.npz")
    assert trainer.epoch == 30 and trainer.model.sizes == (64, 256, 128, 10)


def test_resume_continues_bit_identically(tmp_path):
    common = ["--quiet", "--lr-schedule", "constant", "--optimizer", "sgd", "--hidden", "32"]
    assert fastbp_cli("train", "--epochs", 6, "--save", tmp_path / "straight.npz", *common)[0] == 0
    assert fastbp_cli("train", "--epochs", 3, "--save", tmp_path / "half.npz", *common)[0] == 0
    status, out, err = fastbp_cli("train", "--resume", tmp_path / "half.npz", "--epochs", 6, "--quiet",
                                  "--save", tmp_path / "resumed.npz")
    assert status == 0 and "resuming at epoch 3" in out, err
    straight, resumed = np.load(tmp_path / "straight.npz"), np.load(tmp_path / "resumed.npz")
    for key in ("params", "optimizer_state_0", "optimizer_hyper", "optimizer_step", "rng_state"):
        np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)


def test_an_interrupted_run_resumes_from_its_last_epoch(tmp_path, monkeypatch, capsys):
    # The checkpoint is written after every epoch; interrupt the run in epoch 4 of 7, then go on.
    given = dict.fromkeys(settings.DEFAULTS) | {"epochs": 7, "hidden": [16], "lr_schedule": "cosine"}
    training.train(given, save=tmp_path / "straight.npz", quiet=True)
    original_fit = fastbp.Trainer.fit

    def fit_interrupted(self, *args, callbacks=(), **kwargs):
        def interrupt(trainer, logs):
            if logs["epoch"] == 3:
                raise KeyboardInterrupt
        return original_fit(self, *args, callbacks=[*callbacks, interrupt], **kwargs)
    monkeypatch.setattr(fastbp.Trainer, "fit", fit_interrupted)
    assert training.train(given, save=tmp_path / "run.npz", quiet=True) == 130
    assert "run.npz holds epoch 3: --resume" in capsys.readouterr().err
    monkeypatch.setattr(fastbp.Trainer, "fit", original_fit)
    assert training.train(dict.fromkeys(settings.DEFAULTS) | {"epochs": 7}, resume=tmp_path / "run.npz",
                     save=tmp_path / "run.npz", quiet=True) == 0
    straight, resumed = fastbp.Trainer.load(tmp_path / "straight.npz"), fastbp.Trainer.load(tmp_path / "run.npz")
    np.testing.assert_array_equal(straight.model._params, resumed.model._params)
    assert straight.history.loss == resumed.history.loss and straight.optimizer.lr == resumed.optimizer.lr


@pytest.mark.parametrize("dataset, metric, floor", [("breast_cancer", "accuracy", 0.9), ("wine", "accuracy", 0.9),
                                                     ("diabetes", "r2", 0.3)])
def test_other_embedded_datasets(dataset, metric, floor, capsys):
    assert cli.main(["train", "--dataset", dataset, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert float(out.split(f"test {metric} ")[1].split()[0]) >= floor, out


def test_csv_with_string_labels_then_predict(digits_files, tmp_path, capsys):
    model = tmp_path / "model.npz"
    assert cli.main(["train", "--data", str(digits_files / "digits.csv"), "--target", "digit", "--quiet",
                     "--epochs", "10", "--save", str(model)]) == 0
    assert "digits.csv: 1797 samples, 64 features, 10 classes" in capsys.readouterr().out
    assert cli.main(["predict", "--model", str(model), "--data", str(digits_files / "digits.csv"),
                     "--out", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    assert float(err.split("accuracy ")[1].split()[0]) > 0.95
    with open(tmp_path / "p.csv") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["prediction"] and len(rows) == 1798
    assert {row[0] for row in rows[1:]} <= {"zero", "one", "two", "three", "four", "five", "six", "seven",
                                           "eight", "nine"}
    # a CSV of features only: predictions, no score
    with open(digits_files / "digits.csv") as source, open(tmp_path / "features.csv", "w", newline="") as target:
        csv.writer(target).writerows(row[:-1] for row in csv.reader(source))
    assert cli.main(["predict", "--model", str(model), "--data", str(tmp_path / "features.csv")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [row[0] for row in rows[1:]] and "accuracy" not in err


def test_npz_npy_and_regression(digits_files, tmp_path, capsys):
    assert cli.main(["train", "--data", str(digits_files / "digits.npz"), "--quiet", "--epochs", "3"]) == 0
    assert cli.main(["train", "--data", str(digits_files / "X.npy"), "--target", str(digits_files / "y.npy"),
                     "--task", "regress", "--quiet", "--epochs", "3", "--save", str(tmp_path / "r.npz")]) == 0
    out = capsys.readouterr().out
    assert "64 features, 1 target;" in out and "test r2" in out
    assert cli.main(["predict", "--model", str(tmp_path / "r.npz"), "--data", str(digits_files / "X.npy"),
                     "--target", str(digits_files / "y.npy"), "--out", str(tmp_path / "p.npy")]) == 0
    predictions = np.load(tmp_path / "p.npy")
    assert predictions.shape == (1797, 1) and 0 < predictions.mean() < 9  # in the labels' units


def test_exported_model_predicts_the_same_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    assert cli.main(["train", "--quiet", "--epochs", "3", "--dtype", "float64", "--save", str(tmp_path / "m.npz"),
                     "--activation", "gelu"]) == 0
    model = fastbp.load(tmp_path / "m.npz")
    X = sklearn_datasets.load_digits().data
    with torch.no_grad():
        theirs = model.to_torch()(torch.tensor(X)).numpy()
    np.testing.assert_allclose(model.predict(X), theirs, rtol=1e-12, atol=1e-12)


def test_check_prints_the_table_and_passes(capsys):
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "dense + gelu_tanh" in out and "3 epochs adamw" in out and "all kernels agree with torch" in out


def test_check_fails_on_a_wrong_kernel(monkeypatch, capsys):
    from fastbp.cli import check
    original = check._layer
    monkeypatch.setattr(check, "_layer", lambda a, d, t: [e * 1e12 + 1e-3 for e in original(a, d, t)])
    assert cli.main(["check"]) == 1
    assert "MISS" in capsys.readouterr().out


def test_check_without_torch_says_so():
    code = "import sys; sys.modules['torch'] = None; from fastbp.cli import main; sys.exit(main(['check']))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.strip() == ("fastbp: error: fastbp check needs PyTorch; install it with: "
                                     "pip install 'fastbp[torch]'")


@pytest.mark.parametrize("args, message", [
    (["--hidden", "0"], "--hidden: every width must be >= 1"),
    (["--epochs", "-1"], "--epochs: expected an integer >= 0, got -1"),
    (["--dataset", "mnist"], "--dataset: unknown dataset 'mnist'; valid names: digits, breast_cancer"),
    (["--optimizer", "newton"], "argument --optimizer: invalid choice: 'newton'"),
    (["--data", "missing.csv"], "--data: no file at 'missing.csv'"),
    (["--data", "{folder}/digits.csv"], "--target: a CSV file needs --target COLUMN"),
    (["--data", "{folder}/digits.csv", "--target", "label"], "has no column 'label'; its columns are pixel0"),
    (["--data", "{folder}/bad.csv", "--target", "y"], "--data: column 'b' of '{folder}/bad.csv' must be numeric; "
                                                      "line 3 has 'oops'"),
    (["--data", "{folder}/X.npy"], "--target: a .npy file of features needs --target PATH"),
    (["--loss", "mse"], "--loss mse does not fit the task classify"),
    (["--momentum", "0.9"], "--momentum applies to sgd and rmsprop, not adamw"),
    (["--save", "{folder}/nowhere/m.npz"], "--save: folder '{folder}/nowhere' does not exist"),
    (["--resume", "{folder}/digits.npz"], "--resume: '{folder}/digits.npz' is not a fastbp checkpoint file"),
    (["--val-split", "1.5"], "--val-split: expected a fraction in [0, 1), got 1.5"),
])
def test_bad_train_arguments_give_one_line_and_exit_2(digits_files, args, message, tmp_path):
    with open(digits_files / "bad.csv", "w") as stream:
        stream.write("a,b,y\n1,2,0\n3,oops,1\n")
    args = [a.replace("{folder}", str(digits_files)) for a in args]
    before = sorted(os.listdir(digits_files))
    status, out, err = fastbp_cli("train", "--quiet", *args, cwd=tmp_path)
    assert status == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("fastbp: error: "), err
    assert message.replace("{folder}", str(digits_files)) in err
    assert sorted(os.listdir(digits_files)) == before and os.listdir(tmp_path) == []


def test_bad_predict_arguments(digits_files, tmp_path):
    X = np.random.default_rng(0).standard_normal((5, 3))
    np.save(tmp_path / "three.npy", X)
    fastbp.MLP([64, 10]).save(tmp_path / "m.npz")
    for args, message in [
        (["--model", tmp_path / "m.npz", "--data", tmp_path / "three.npy"],
         f"--data: 3 features, but the model in '{tmp_path / 'm.npz'}' takes 64"),
        (["--model", tmp_path / "missing.npz", "--data", tmp_path / "three.npy"], "--model:"),
        (["--model", digits_files / "X.npy", "--data", tmp_path / "three.npy"], "is not a readable fastbp model"),
        (["--model", tmp_path / "m.npz", "--data", tmp_path / "three.npy", "--out", tmp_path / "p.txt"],
         "must end in .csv, .parquet or .npy"),
    ]:
        status, out, err = fastbp_cli("predict", *args)
        assert status == 2 and err.count("\n") == 1 and message in err, (args, err)


def test_resume_rejects_settings_the_checkpoint_fixes(tmp_path):
    assert cli.main(["train", "--quiet", "--epochs", "1", "--hidden", "8", "--save", str(tmp_path / "m.npz")]) == 0
    for args, message in [(["--hidden", "16"], "--hidden cannot be combined with --resume"),
                          (["--epochs", "1"], "the checkpoint has trained 1 epochs already")]:
        status, out, err = fastbp_cli("train", "--resume", tmp_path / "m.npz", *args)
        assert status == 2 and message in err, err


@pytest.mark.parametrize("missing, args, message", [
    ("sklearn", [], "--dataset digits needs scikit-learn; install it with: pip install 'fastbp[sklearn]'"),
    ("matplotlib", ["--plot", "h.png"], "--plot needs matplotlib; install it with: pip install 'fastbp[plot]'"),
])
def test_a_missing_extra_is_one_line_naming_it(missing, args, message, tmp_path):
    code = (f"import sys; sys.modules[{missing!r}] = None; from fastbp.cli import main; "
            f"sys.exit(main(['train', *{args!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 2 and result.stderr == f"fastbp: error: {message}\n"
    assert os.listdir(tmp_path) == []


def test_without_tqdm_progress_is_a_line_per_epoch(tmp_path):
    code = "import sys; sys.modules['tqdm'] = None; from fastbp.cli import main; sys.exit(main(['train', '--epochs', '3', '--hidden', '8']))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2", "epoch 3"]
    assert "val_accuracy" in lines[-1] and "samples/s" in lines[-1]


def test_threads_limits_the_blas_pool_while_training():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with progress.thread_limit(1):
        inside = [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
    assert inside and set(inside) == {1}
    assert cli.main(["train", "--threads", "1", "--epochs", "1", "--quiet", "--hidden", "8"]) == 0
