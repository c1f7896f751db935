"""Writes the files in this folder: a model file and, per optimizer kind, a
checkpoint at the end of an epoch and one in the middle of an epoch, with
the file format of fastbp 0.1.0 (model version 1, checkpoint version 3).

They were written once and are kept as they are: tests/library/
test_legacy_files.py loads them with today's code and checks that training
goes on from them exactly as from the run that wrote them. Running this again
with a newer fastbp would write today's format instead, so it is only the
record of how they were made.
"""
import pathlib

import numpy as np

import fastbp

HERE = pathlib.Path(__file__).resolve().parent
# 24 samples in batches of 8: three steps per epoch
N_SAMPLES, BATCH = 24, 8
# optimizer kind -> (keyword arguments, schedule and its arguments or None)
KINDS = {
    "sgd": ({"lr": 0.05, "momentum": 0.9, "nesterov": True}, ("StepLR", {"step_size": 1, "gamma": 0.7})),
    "adam": ({"lr": 0.01, "amsgrad": True}, ("ReduceLROnPlateau", {"patience": 0, "factor": 0.5})),
    "adamw": ({"lr": 0.01}, None),
    "rmsprop": ({"lr": 0.005, "momentum": 0.5, "centered": True}, ("CosineAnnealingLR", {"T_max": 5})),
}


def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_SAMPLES, 4))
    return X, np.argmax(X[:, :3] + 0.3 * rng.standard_normal((N_SAMPLES, 3)), axis=1)


def make_model():
    return fastbp.MLP([4, 5, 3], activation="tanh", dtype="float64", seed=3)


def make_trainer(kind):
    model = make_model()
    arguments, schedule = KINDS[kind]
    optimizer = fastbp.optim.OPTIMIZERS[kind](model, **arguments)
    schedule = None if schedule is None else getattr(fastbp, schedule[0])(optimizer, **schedule[1])
    trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), optimizer, schedule=schedule)
    trainer.metadata = {"written_by": "fastbp 0.1.0", "kind": kind}
    return trainer


def fit(trainer, epochs, **kwargs):
    """Train on the first 18 samples, validating on the last 6 (so that the
    best epoch and its parameters are kept too)."""
    X, y = data()
    return trainer.fit(X[:18], y[:18], epochs=epochs, batch_size=BATCH, validation_data=(X[18:], y[18:]),
                       **kwargs)


def fit_restoring_the_best(trainer, epochs, **kwargs):
    """Validation labels the model cannot learn, so that the best epoch comes
    early and the fit ends by restoring its parameters (the checkpoint then
    keeps the last epoch's aside)."""
    X, y = data()
    return trainer.fit(X[:18], y[:18], epochs=epochs, batch_size=BATCH,
                       validation_data=(X[18:], (y[18:] + 1) % 3), early_stopping=10, restore_best=True, **kwargs)


def write():
    make_model().save(HERE / "model_v1.npz")
    for kind in KINDS:
        trainer = make_trainer(kind)
        fit(trainer, 2, seed=5)
        trainer.save(HERE / f"checkpoint_v3_{kind}.npz")
        # 18 samples, batches of 8: three steps an epoch; step 4 is the second epoch's first
        trainer = make_trainer(kind)
        fit(trainer, 2, seed=5, checkpoint_every=4, checkpoint_path=HERE / f"checkpoint_v3_{kind}_mid_epoch.npz")

    trainer = make_trainer("adam")
    fit_restoring_the_best(trainer, 8, seed=5)
    trainer.save(HERE / "checkpoint_v3_adam_restored_best.npz")


if __name__ == "__main__":
    write()
