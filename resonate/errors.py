"""Errors that reach the user as one line, never as a traceback."""


class ResonateError(Exception):
    """A problem the user can act on (bad input, missing model...). Shown as `error: <message>`."""


class StageUnavailable(ResonateError):
    """A stage cannot run here (e.g. model weights missing). The chain goes on without it."""
