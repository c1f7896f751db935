"""The ``fastbp train`` command: settings to data, model, optimizer and
schedule; progress while it trains; a summary at the end.

Every setting is checked and every file read before anything trains or is
written, so that a bad argument changes nothing.
"""
import dataclasses
import os
import sys
import time

import numba.core.event as numba_event

from fastbp.backends.cuda import as_device
from fastbp.data import DataError
from fastbp.files import load_checkpoint
from fastbp.cli.model import build, replan
from fastbp.cli.prepare import Prepared, data_inputs, describe_counts, targets_for
from fastbp.cli.progress import CompileNotice, Progress, thread_limit
from fastbp.cli.report import test_report
from fastbp.cli.safety import StopOnInterrupt, check_output
from fastbp.cli.settings import flag_message, resolve

# without --save-every, the checkpoint is written at most this often (and at the end): a write costs
# more than an epoch of a small model
SAVE_SECONDS = 5.0


class Saver:
    """The --save callback: a checkpoint every ``every`` epochs, or (``every``
    None) at most once every SAVE_SECONDS; the run writes the last one itself."""

    def __init__(self, path, every):
        self.path, self.every, self.epoch, self.time = path, every, None, time.perf_counter()

    def __call__(self, trainer, logs):
        due = trainer.epoch % self.every == 0 if self.every else time.perf_counter() - self.time >= SAVE_SECONDS
        if due:
            self.write(trainer)

    def write(self, trainer):
        trainer.save(self.path)
        self.epoch, self.time = trainer.epoch, time.perf_counter()


def train(given, resume=None, save=None, plot=None, quiet=False, threads=None, out=None, save_every=None,
          overwrite=False, device="cpu", distributed=False, checkpoint_every=None):
    """The ``fastbp train`` command; returns the exit status.

    ``given`` maps every name of ``settings.DEFAULTS`` to the command line's
    value or None; the rest are the options that are not part of a run's
    settings (not saved, not fixed by a checkpoint)."""
    with numba_event.install_listener("numba:compile", CompileNotice()):
        status = _train(given, resume, save, plot, quiet, threads, out or sys.stdout, save_every, overwrite, device,
                        distributed, checkpoint_every)
    if distributed:
        from fastbp.backends.distributed import shutdown

        shutdown()
    return status


def _train(given, resume, save, plot, quiet, threads, out, save_every, overwrite, device, distributed,
           checkpoint_every):
    started = time.perf_counter()
    rank, world_size = _check_options(device, distributed, save, save_every, checkpoint_every, plot)
    limit = thread_limit(threads)
    settings, trainer = _settings(given, resume, device)
    if settings["optimizer"] == "lbfgs" and (device == "cuda" or distributed or checkpoint_every is not None):
        raise DataError("--optimizer lbfgs trains on the CPU in one process, without --checkpoint-every (SciPy keeps "
                        "its state inside the run); --save keeps the run")
    if settings["optimizer"] == "lbfgs" and settings.get("dropout"):
        raise DataError("--optimizer lbfgs needs a deterministic objective: train --dropout with another optimizer")
    # saving over the checkpoint a run resumes from is how it goes on
    inputs = data_inputs(settings["data"], settings["target"])
    save = check_output("--save", save, inputs, overwrite)
    plot = check_output("--plot", plot, {**inputs, "--resume": resume, "--save": save}, overwrite)
    if plot is not None and os.path.splitext(plot)[1].lower() != ".png":
        raise DataError(f"--plot: {str(plot)!r} must end in .png, the format of the chart")
    if rank:
        # rank 0 alone prints and writes; the others train their shard in silence
        out, quiet, save, plot = open(os.devnull, "w"), True, None, None
    if trainer is not None:
        prepared = Prepared(settings, trainer.metadata["preprocessing"])
        change = replan(trainer, settings, given)
    else:
        prepared = Prepared(settings)
        trainer, change = build(settings, prepared), ""
    if distributed:
        from fastbp.backends.distributed import DistributedTrainer

        trainer = DistributedTrainer.wrap(trainer)
    data_seconds = time.perf_counter() - started
    parts = _parts(trainer, prepared)
    trainer.model.to(device)
    print(describe_counts(prepared), file=out)
    print(_header(trainer, settings, prepared, device, world_size if distributed else None, resume, change),
          file=out, flush=True)
    trainer.metadata = {"settings": settings, "preprocessing": prepared.preprocessing}
    with limit:
        outcome = _fit(trainer, settings, parts, resume is None, quiet, save, save_every, checkpoint_every)
    return _report(trainer, settings, prepared, parts["test"], outcome, save, plot, started, data_seconds, out)


def _check_options(device, distributed, save, save_every, checkpoint_every, plot):
    """(rank, world size) of this process, once the options that need no file
    are checked: the device runs here, and each option has what it needs."""
    try:
        as_device("--device", device)
    except RuntimeError as error:
        raise DataError(f"--device {device}: {error}") from None
    rank, world_size = _join_process_group(device) if distributed else (0, 1)
    if save_every is not None and save is None:
        raise DataError(f"--save-every {save_every} needs --save PATH, the checkpoint to write")
    if checkpoint_every is not None and save is None:
        raise DataError(f"--checkpoint-every {checkpoint_every} needs --save PATH, the checkpoint to write")
    # the library refuses these too, but its remedies are the Python API's
    if checkpoint_every is not None and distributed:
        raise DataError(f"--checkpoint-every {checkpoint_every} works in one process only; with --distributed, "
                        f"--save writes at the end of epochs")
    if checkpoint_every is not None and device == "cuda":
        raise DataError(f"--checkpoint-every {checkpoint_every} works on the CPU only; on the GPU, use "
                        f"--save-every N (epochs)")
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise DataError("--plot needs matplotlib; install it with: pip install 'fastbp[plot]'") from None
    return rank, world_size


def _join_process_group(device):
    """(rank, world size) of this process in the torchrun launch --distributed trains across."""
    if device != "cpu":
        raise DataError(f"--distributed trains on the CPU (gloo), got --device {device}; drop one of the two")
    from fastbp.backends.distributed import init

    try:
        return init()
    except (ImportError, RuntimeError) as error:
        raise DataError(f"--distributed: {error}") from None


def _settings(given, resume, device):
    """(settings, the resumed checkpoint's trainer or None) of the run."""
    if resume is None:
        settings = resolve(given)
        if settings["epochs"] < 1:
            raise DataError(f"--epochs {settings['epochs']} trains nothing; ask for at least 1")
        return settings, None
    try:
        trainer = load_checkpoint(resume)
    except (OSError, ValueError) as error:
        raise DataError(f"--resume: {error}") from None
    if "settings" not in trainer.metadata:
        raise DataError(f"--resume: {resume!r} was not written by fastbp train (no settings in it)")
    settings = resolve(given, trainer.metadata["settings"])
    if settings["epochs"] <= trainer.epoch:
        raise DataError(f"--epochs {settings['epochs']}: the checkpoint has trained {trainer.epoch} epochs "
                        f"already; ask for more")
    stopped = trainer.unfinished_epoch
    if stopped is not None and settings["batch_size"] != stopped["batch_size"]:
        raise DataError(f"--batch-size {settings['batch_size']}: the checkpoint stopped in the middle of epoch "
                        f"{trainer.epoch + 1}, in batches of {stopped['batch_size']}; resume with "
                        f"--batch-size {stopped['batch_size']}")
    if stopped is not None and device == "cuda":
        raise DataError(f"--device cuda: the checkpoint stopped in the middle of epoch {trainer.epoch + 1}, "
                        f"which only the CPU goes on from; resume on the CPU")
    return settings, trainer


def _parts(trainer, prepared):
    """{"train", "val", "test": (X, y, sample weights or None)}, the targets as the trainer's loss takes them."""
    parts = {name: prepared.part(name) + (prepared.part_weights(name),) for name in ("train", "val", "test")}
    stopped, n_train = trainer.unfinished_epoch, len(parts["train"][0])
    if stopped is not None and n_train != stopped["n_samples"]:
        raise DataError(f"--data: {prepared.source} gives {n_train} training samples, but the checkpoint "
                        f"stopped in the middle of an epoch over {stopped['n_samples']}; resume on the data it "
                        f"was trained on")
    return {name: (X, targets_for(trainer, y), w) for name, (X, y, w) in parts.items()}


def _header(trainer, settings, prepared, device, world_size, resume, change):
    """The line that says what trains: model, optimizer, loss, batch, schedule, where."""
    model = trainer.model
    steps = (f"lbfgs (weight decay {trainer.optimizer.weight_decay:g}), {trainer.loss.name} loss, full batch"
             if settings["optimizer"] == "lbfgs" else
             f"{settings['optimizer']} lr {trainer.optimizer.lr:g}, {trainer.loss.name} loss, batch "
             f"{settings['batch_size']}, {settings['lr_schedule']} schedule")
    layers = ((", residual blocks" if model.residual else "") + (", layer norm" if model.norm else "") +
              (f", dropout {max(model.dropout):g}" if any(p > 0 for p in model.dropout) else ""))
    return (f"model: MLP {list(model.sizes)} {settings['activation']}{layers}, {model.dtype.name}, "
            f"{model.n_params:,} parameters; {steps}"
            + (", standardized inputs" + (" and targets" if prepared.task == "regress" else "")
               if settings["standardize"] else "")
            + (f", weighted by column {settings['sample_weight']!r}" if settings.get("sample_weight") else "")
            + (f", {settings['class_weight']} class weights" if settings.get("class_weight") else "")
            + (", on the GPU" if device == "cuda" else "")
            + (f", across {world_size} processes" if world_size else "")
            + (f"; resuming at epoch {trainer.epoch}" if resume else "") + (f", {change}" if change else ""))


@dataclasses.dataclass
class _Outcome:
    """How a fit ended: the test rows' outputs (None when not scored), whether Ctrl-C
    stopped it after an epoch (``interrupted``) or in one (``aborted``, the
    trainer's state not whole), its times, and the --save callback."""
    test_score: object
    interrupted: bool
    aborted: bool
    fit_seconds: float
    jit_seconds: float
    saver: Saver | None


def _fit(trainer, settings, parts, fresh, quiet, save, save_every, checkpoint_every):
    """Train up to --epochs in all, then score the test rows unless stopped."""
    (X_train, y_train, w_train), (X_val, y_val, w_val), (X_test, y_test, w_test) = (parts["train"], parts["val"],
                                                                                     parts["test"])
    progress = Progress(settings["epochs"], trainer.epoch, quiet, len(X_train))
    saver, stopper = Saver(save, save_every) if save else None, StopOnInterrupt()
    jit = numba_event.TimingListener()
    started = time.perf_counter()
    test_score, aborted = None, False
    try:
        with numba_event.install_listener("numba:compiler_lock", jit), stopper:
            trainer.fit(X_train, y_train, epochs=settings["epochs"] - trainer.epoch,
                        batch_size=settings["batch_size"], seed=settings["seed"] if fresh else None,
                        validation_data=(X_val, y_val, w_val) if len(X_val) else None, sample_weight=w_train,
                        early_stopping=settings["early_stopping"], monitor="metric" if len(X_val) else "loss",
                        restore_best=settings.get("restore_best") is not False,
                        callbacks=[progress, stopper] + ([saver] if saver else []),
                        checkpoint_every=checkpoint_every, checkpoint_path=save if checkpoint_every else None,
                        on_nonfinite=settings["on_nonfinite"])
            if len(X_test) and not stopper.pressed:
                test_score = trainer.model.predict(X_test)
    except (TypeError, ValueError) as error:
        # what the library refuses of a setting, such as a --batch-size that does not split across the processes
        if flag_message(error) == str(error):
            raise
        raise DataError(flag_message(error)) from None
    except KeyboardInterrupt:
        # a second Ctrl-C, mid-epoch: the trainer's state is not whole and is not saved
        aborted = stopper.pressed
        if not aborted:  # raised by a callback, after its epoch
            stopper.pressed = True
    finally:
        progress.close()
    return _Outcome(test_score, stopper.pressed, aborted, time.perf_counter() - started,
                    jit.duration if jit.done else 0.0, saver)


def _report(trainer, settings, prepared, test, outcome, save, plot, started, data_seconds, out):
    """The summary after the fit, the last checkpoint and the chart; the exit status."""
    history, metric = trainer.history, trainer.history.metric
    best = trainer.best_epoch
    if best is not None and not outcome.aborted:
        index = history.epoch.index(best)
        units = " of standardized targets" if metric in ("rmse", "mae") and settings["standardize"] else ""
        monitored = (f"val_loss {history.val_loss[index]:.4f}, val_{metric} {history.val_metric[index]:.4f}{units}"
                     if history.has_validation else f"loss {history.loss[index]:.4f}")
        asked, restored = settings["epochs"], settings.get("restore_best") is not False and best != trainer.epoch
        why = (f" run (interrupted, {asked} asked for)" if outcome.interrupted else
               f" run (early stopping, {asked} asked for)" if trainer.epoch < asked else "")
        print(f"best epoch {best} of {trainer.epoch}{why}: {monitored}"
              + ("; its weights restored" if restored and not outcome.interrupted else ""), file=out)
    if outcome.test_score is not None:
        for line in test_report(trainer, prepared, outcome.test_score, *test[1:]):
            print(line, file=out)
    if save and not outcome.aborted:
        outcome.saver.write(trainer)
    if outcome.interrupted:
        held = trainer.epoch if save and not outcome.aborted else outcome.saver.epoch if save else None
        kept = f"; {save} holds epoch {held}: --resume {save} --epochs {settings['epochs']} goes on" if held else ""
        where = f"in epoch {trainer.epoch + 1}" if outcome.aborted else f"after epoch {trainer.epoch}"
        print(f"fastbp: interrupted {where}{kept}", file=sys.stderr)
        return 130
    print(f"time {time.perf_counter() - started:.2f} s: data {data_seconds:.2f} s, training and evaluation "
          f"{outcome.fit_seconds:.2f} s (of which JIT compile and cache load {outcome.jit_seconds:.2f} s)", file=out)
    if save:
        print(f"saved {save} (fastbp predict --model {save} --data ...; --resume {save} to go on)", file=out)
    if plot:
        history.plot(plot)
        print(f"wrote {plot}", file=out)
    return 0
