"""The names of the Glow-step parts, importable without TensorFlow (for ``tfinv --help``).

`tfinv.blocks.glow_step` holds the registries (``COUPLINGS``, ``LINEAR_LAYERS``,
``ATTENTION_LAYERS``) that map these names to layers; a test checks that the tuples here equal
the built-in registries. Names added at run time with `tfinv.blocks.glow_step.register_linear` are
not listed here: `linear_names` includes them once ``glow_step`` is imported.
"""

from __future__ import annotations

import sys

__all__ = ["ATTENTION_NAMES", "COUPLING_NAMES", "LINEAR_NAMES", "linear_names"]

#: The built-in ``GlowStep(coupling=...)`` names.
COUPLING_NAMES = ("additive", "affine", "quad", "soft_clamp")
#: The built-in ``GlowStep(linear=...)`` names.
LINEAR_NAMES = (
    "butterfly", "cinc", "cinc_chain", "conv_exp", "eco", "emerging", "entropy_weighted", "finc", "full_butterfly",
    "inv_conv1x1", "inverse_conv", "inverse_flow", "me_woodbury", "periodic_conv", "raster_emerging",
    "symmetric_conv", "woodbury",
)
#: The built-in ``GlowStep(attention=...)`` names.
ATTENTION_NAMES = ("imap", "itrans")


def linear_names() -> list[str]:
    """The linear-layer names: the built-in ones, plus those registered with
    `tfinv.blocks.glow_step.register_linear` if that module is already imported (importing it
    would load TensorFlow)."""
    glow_step = sys.modules.get("tfinv.blocks.glow_step")
    registered = getattr(glow_step, "LINEAR_LAYERS", {}) if glow_step is not None else {}
    return sorted(set(LINEAR_NAMES) | set(registered))
