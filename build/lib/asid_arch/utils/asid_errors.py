"""The errors the kit raises for the user, each with a message meant to be shown as it is.

Kit file (``basicsr/utils/asid_errors.py`` in a BasicSR checkout): standard library only.
"""


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written: the run stops instead of training on without one."""


class PretrainedWeightsError(ValueError):
    """A weights file that cannot be used, with a message meant for the user."""
