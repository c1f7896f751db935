"""Reading model files and checkpoints into fastbp objects (the file format
is in ``fastbp.archive``; writing is ``MLP.save`` and ``Trainer.save``)."""
from fastbp import archive
from fastbp.archive import CHECKPOINT_FORMAT, MODEL_FORMAT, MissingFileError  # noqa: F401 (the file module's names)
from fastbp.mlp import MLP
from fastbp.trainer import Trainer


def _model(path, contents):
    try:
        return MLP.from_state_dict(archive.model_state(path, contents))
    except (KeyError, TypeError, ValueError) as error:
        raise archive.damaged(path, error) from None


def load(path):
    """The model in a model file (``MLP.save``) or a checkpoint
    (``Trainer.save``); a missing, truncated, corrupt or foreign file, or one of
    another format version, raises a ValueError that says which (for a
    missing file, a ``MissingFileError``: also a FileNotFoundError).

    A file of ``fastbp train`` also holds the preprocessing the model was
    trained with (imputation, scaling, one-hot encoding, the class labels):
    ``fastbp.Pipeline.load(path)`` gives both, predicting from a DataFrame
    or a file in the data's own labels."""
    return _model(*archive.read(path, {**archive.MODEL, **archive.CHECKPOINT}))


def load_checkpoint(path):
    """The fastbp.Trainer a checkpoint holds, ready to ``fit`` on exactly as
    the run that wrote it would have; bad files raise as in ``load``."""
    return Trainer.load(path)


def load_any(path):
    """(model, trainer) from a model file (trainer None) or a checkpoint."""
    path, contents = archive.read(path, {**archive.MODEL, **archive.CHECKPOINT})
    if str(contents["format"]) == MODEL_FORMAT:
        return _model(path, contents), None
    trainer = Trainer.load(path)
    return trainer.model, trainer
