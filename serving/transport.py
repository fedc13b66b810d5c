"""The wire protocol behind `tfinv.serving.Client`: the `Transport` interface."""

from __future__ import annotations

import abc
from typing import Any, Mapping

import numpy as np

from tfinv.export.signatures import io_names

__all__ = ["DEFAULT_URL", "SIGNATURES", "Transport"]

DEFAULT_URL = "http://127.0.0.1:8501"

#: The signatures of a served flow, ``{key: (input names, output names)}`` (the deployment
#: contract, `tfinv.export.signatures`; a conditional model's also take ``context``).
SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = io_names()


class Transport(abc.ABC):
    """The wire protocol of a `Client`: one instance talks to one model (and version).

    Subclasses take ``(url, model, version=None, timeout=30.0)`` and may set ``default_url``,
    used by `Client` when no URL is given.
    """

    default_url: str = DEFAULT_URL

    @abc.abstractmethod
    def predict(self, signature: str, inputs: Mapping[str, Any], row_format: bool = False) -> dict[str, np.ndarray]:
        """Runs ``signature`` on named ``inputs``; returns the named outputs as arrays."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """The model status, in TF Serving's REST JSON (``{"model_version_status": [...]}``)."""

    @abc.abstractmethod
    def metadata(self) -> dict[str, Any]:
        """The model metadata, in TF Serving's REST JSON (``{"model_spec", "metadata"}``)."""

    def close(self) -> None:
        """Releases connections."""
