"""Errors about the user's input data (missing paths, malformed files): the CLI prints their message
as ``pamnet-fast: error: ...`` without a traceback."""


class InputDataError(ValueError):
    """The input data is missing or malformed; the message names the file or option and the fix."""
