"""A ``fastbp train`` run's trainer: model, loss, optimizer and schedule
built from its settings, and a resumed run's schedule laid out again."""
from fastbp.data import DataError
from fastbp.losses import LOSSES, CrossEntropyLoss, class_weights
from fastbp.metrics import CLASSIFY, REGRESS
from fastbp.mlp import MLP
from fastbp.optim import LBFGS, OPTIMIZERS
from fastbp.schedules import CosineAnnealingLR, ReduceLROnPlateau, StepLR
from fastbp.trainer import Trainer
from fastbp.cli.settings import CLASSIFY_LOSSES, REGRESS_LOSSES, flag_message


def build(settings, prepared):
    """A fresh Trainer for ``settings``. The library checks every value; what
    it refuses is a DataError naming the command-line flag."""
    try:
        return _build(settings, prepared)
    except DataError:
        raise
    except (TypeError, ValueError) as error:
        raise DataError(flag_message(error)) from None


def _build(settings, prepared):
    task, loss_name = prepared.task, settings["loss"]
    if loss_name is None:
        loss_name = "cross_entropy" if task == "classify" else "mse"
    allowed = CLASSIFY_LOSSES if task == "classify" else REGRESS_LOSSES
    if loss_name not in allowed:
        raise DataError(f"--loss {loss_name} does not fit the task {task}; use one of {', '.join(allowed)}")
    n_out = prepared.n_outputs
    if loss_name == "bce_with_logits":
        if n_out != 2:
            raise DataError(f"--loss bce_with_logits needs two classes, the data has {n_out}")
        n_out = 1
    settings["loss"] = loss_name
    metrics = CLASSIFY if task == "classify" else REGRESS
    if settings.get("metric") is not None and settings["metric"] not in metrics:
        raise DataError(f"--metric {settings['metric']} does not fit the task {task}; use one of {', '.join(metrics)}")
    loss = _loss(loss_name, settings, prepared)
    if settings.get("residual") and len(set(settings["hidden"])) != 1:
        raise DataError(f"--residual makes each hidden layer a residual block of one width: give --hidden widths "
                        f"all equal, got {','.join(map(str, settings['hidden']))}")
    model = MLP([prepared.n_features, *settings["hidden"], n_out], activation=settings["activation"],
                dtype=settings["dtype"], seed=settings["seed"], dropout=settings.get("dropout") or 0.0,
                norm=settings.get("norm"), residual=bool(settings.get("residual")))
    name = settings["optimizer"]
    if name == "lbfgs":
        return Trainer(model, loss, _lbfgs(model, settings), metric=settings.get("metric"))
    kwargs = {"lr": settings["lr"] if settings["lr"] is not None else (0.01 if name == "sgd" else 1e-3)}
    if settings["weight_decay"] is not None:  # else the optimizer's default: 0, or 0.01 for adamw
        kwargs["weight_decay"] = settings["weight_decay"]
    if settings["momentum"] is not None and name not in ("sgd", "rmsprop"):
        raise DataError(f"--momentum applies to sgd and rmsprop, not {name}")
    if name in ("sgd", "rmsprop"):
        kwargs["momentum"] = settings["momentum"] if settings["momentum"] is not None else (0.9 if name == "sgd" else 0.0)
    optimizer = OPTIMIZERS[name](model, **kwargs)
    return Trainer(model, loss, optimizer, max_grad_norm=settings["max_grad_norm"],
                   schedule=plan_schedule(settings["lr_schedule"], optimizer, settings["epochs"]),
                   metric=settings.get("metric"))


def _loss(name, settings, prepared):
    """The loss ``name``; with --class-weight balanced, cross-entropy
    weighing each class by n / (n_classes * its count) in the training rows."""
    if settings.get("class_weight") is None:
        return LOSSES[name]()
    if name != "cross_entropy":
        raise DataError(f"--class-weight weighs the classes of --loss cross_entropy, not {name}"
                        + (" (the task is regress)" if prepared.task == "regress" else ""))
    labels = prepared.part("train")[1]
    return CrossEntropyLoss(weight=class_weights(labels, settings["class_weight"], prepared.n_outputs))


def _lbfgs(model, settings):
    """--optimizer lbfgs: an epoch is one iteration over the whole training
    set; the line search sets each step, so the flags of a step's size are refused."""
    for flag, key in (("--lr", "lr"), ("--momentum", "momentum"), ("--max-grad-norm", "max_grad_norm")):
        if settings[key] is not None:
            raise DataError(f"{flag} does not apply to --optimizer lbfgs: its line search sets each step")
    return LBFGS(model, weight_decay=settings["weight_decay"] or 0.0)


def plan_schedule(name, optimizer, epochs):
    """The schedule ``name`` laid out over ``epochs`` from the optimizer's
    current rate: step divides it by 10 every third of them, cosine anneals it
    to 0 by the last, plateau waits for the validation loss."""
    epochs = max(1, epochs)
    return {"constant": lambda: None,
            "step": lambda: StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1),
            "cosine": lambda: CosineAnnealingLR(optimizer, T_max=epochs),
            "plateau": lambda: ReduceLROnPlateau(optimizer, factor=0.1, patience=5)}[name]()


def replan(trainer, settings, given):
    """Fit a resumed run's schedule to its new end: a --lr or --lr-schedule
    starts a new schedule over the remaining epochs; else a step or cosine
    schedule is laid out again for --epochs in all, at its current position,
    so that the rate is the one a run planned that long would have now.
    Returns what changed, for the header ("" for nothing)."""
    optimizer, old, total = trainer.optimizer, trainer.schedule, settings["epochs"]
    if isinstance(optimizer, LBFGS):
        _lbfgs(trainer.model, {**settings, **{key: given.get(key) for key in ("lr", "momentum", "max_grad_norm")}})
        return ""
    if given.get("lr") is not None or given.get("lr_schedule") is not None:
        # a schedule that has run its course leaves the rate near 0: start again from the run's first rate
        optimizer.lr = given["lr"] if given.get("lr") is not None else (old.base_lr if old else optimizer.lr)
        trainer.schedule = plan_schedule(settings["lr_schedule"], optimizer, total - trainer.epoch)
        return (f"new {settings['lr_schedule']} schedule from lr {optimizer.lr:g} over epochs "
                f"{trainer.epoch + 1}-{total}")
    if old is None or old.name not in ("step", "cosine"):
        return ""
    began = trainer.epoch - old.last_epoch
    new = plan_schedule(old.name, optimizer, total - began)
    if new.arguments() == old.arguments():
        return ""
    new.load_state_dict(old.state_dict())
    optimizer.lr = new.lr_at(new.last_epoch)
    trainer.schedule = new
    return f"{old.name} schedule re-planned for {total} epochs"
