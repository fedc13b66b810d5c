"""Errors of the export stage."""


class ExportError(ValueError):
    """A model or layer cannot be exported as asked; the message names the layer and the op.

    Raised before any file is written.
    """
