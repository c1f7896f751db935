"""The settings of a ``fastbp train`` run: the defaults, what a checkpoint
fixes, and how the command line's values and a resumed run's combine."""
from fastbp import data
from fastbp.data import DataError

DEFAULTS = {
    "dataset": "digits", "data": None, "target": None, "task": None, "hidden": [256, 128],
    "activation": "relu", "loss": None, "optimizer": "adamw", "lr": None, "momentum": None,
    "weight_decay": None, "epochs": 30, "batch_size": 64, "val_split": 0.1, "test_split": 0.2,
    "early_stopping": None, "lr_schedule": "cosine", "max_grad_norm": None, "seed": 0,
    "dtype": "float32", "standardize": None, "features": None, "impute": None, "unknown_category": None,
    "max_categories": None, "on_nonfinite": "raise", "class_weight": None, "sample_weight": None,
    "dropout": None, "norm": None, "residual": None, "metric": None, "restore_best": None,
}
# what a checkpoint fixes: giving one of these with --resume is an error
MODEL_SETTINGS = ("task", "hidden", "activation", "loss", "optimizer", "momentum", "weight_decay",
                  "max_grad_norm", "seed", "dtype", "standardize", "val_split", "test_split",
                  "features", "impute", "unknown_category", "max_categories", "class_weight", "sample_weight",
                  "dropout", "norm", "residual", "metric")
CLASSIFY_LOSSES, REGRESS_LOSSES = ("cross_entropy", "bce_with_logits"), ("mse", "l1", "huber")


def flag(name):
    return "--" + name.replace("_", "-")


def resolve(given, checkpoint_settings=None):
    """Settings of a run: the defaults (or a resumed run's settings) with
    what the command line gave. Raises DataError for a clash."""
    given = {key: value for key, value in given.items() if value is not None}
    if checkpoint_settings is None:
        settings = {**DEFAULTS, **given}
        if settings["standardize"] is None:  # a file's columns come in any units; an embedded set knows its own
            embedded = data.DATASETS.get(settings["dataset"])
            settings["standardize"] = settings["data"] is not None or bool(embedded and embedded[2])
        return settings
    fixed = [flag(name) for name in MODEL_SETTINGS if name in given]
    if fixed:
        raise DataError(f"{fixed[0]} cannot be combined with --resume: the checkpoint fixes it")
    # a setting newer than the checkpoint takes its default
    settings = {**DEFAULTS, **checkpoint_settings}
    if "data" in given or "dataset" in given:
        settings.update(data=given.get("data"), dataset=given.get("dataset", DEFAULTS["dataset"]),
                        target=given.get("target"))
    settings.update({key: value for key, value in given.items() if key not in ("data", "dataset", "target")})
    return settings


def flag_message(error):
    """The message of the library's ``error``, with the setting it begins by
    naming (``max_grad_norm must be ...``) written as its flag."""
    name, _, rest = str(error).partition(" ")
    return f"{flag(name)} {rest}" if name in DEFAULTS else str(error)
