"""User-facing errors.

Every failure a user can cause or fix raises a subclass of :class:`MMDeployError` with a
one-line message and a hint.  The CLI prints ``error: <message> (<hint>)`` and exits with
``exit_code``: 2 for bad input, 1 for a check that ran and failed (parity, budgets) or an
internal error.  Tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations


class MMDeployError(Exception):
    """Base class of every error the CLI reports as one line."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        text = " ".join(self.message.split()).rstrip(".")
        return f"{text}; {self.hint}" if self.hint else text


class InputError(MMDeployError):
    """A missing file, a malformed option, recipe or request."""


class CheckpointError(MMDeployError):
    """A checkpoint that cannot be read: corrupt, truncated, not a checkpoint, unsafe pickle."""


class UnsupportedError(MMDeployError):
    """Something valid but not supported: an unknown family, an op a backend cannot convert."""


class BackendUnavailable(MMDeployError):
    """A backend whose package is not installed (the hint names the extra to install)."""


class CalibrationError(MMDeployError):
    """Calibration or evaluation data that is empty, unreadable or of the wrong modality."""


class CheckFailed(MMDeployError):
    """A check that ran and failed: parity beyond tolerance, a budget not met."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, details: str | None = None):
        super().__init__(message, hint)
        self.details = details  # e.g. a per-output table printed before the one-line error


class VerificationError(CheckFailed):
    """Outputs of a converted artifact differ from the PyTorch reference beyond tolerance."""


class OutputShapeError(CheckFailed):
    """A runtime returned an output whose shape contradicts the signature for the feeds given
    (e.g. a batch of 0 rows for a batch-1 feed): a wrong result is never passed on."""


class BudgetExceeded(CheckFailed):
    """A latency / size / accuracy budget was not met."""


class InternalError(MMDeployError):
    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM while a command runs (see :func:`mmdeploy.artifact.sigterm_raises`): unwinds like
    Ctrl-C, so temporary files are removed; the CLI exits 143."""


# the toolchain's packages (the `export` extra): absent in a runtime-only `pip install mmdeploy`
TOOLCHAIN_PACKAGES = ("torch", "transformers", "onnx", "onnxsim", "safetensors")
EXPORT_HINT = 'pip install "mmdeploy[export]"'


def toolchain_missing(exc: ImportError) -> MMDeployError | None:
    """The one-line error for an ImportError of a toolchain package (None for any other import):
    a toolchain command run in the runtime-only install."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if name not in TOOLCHAIN_PACKAGES:
        return None
    return BackendUnavailable(f"this command needs the toolchain ({name} is not installed; "
                              "`pip install mmdeploy` alone is the runtime)", EXPORT_HINT)
