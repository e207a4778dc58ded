"""Errors that Capsule reports to the user as one line, never as a traceback."""


class CapsuleError(Exception):
    """An expected failure: shown as one line plus an optional hint.

    The message reads "failed to <verb> <object>: <cause>".
    """

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 125):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
