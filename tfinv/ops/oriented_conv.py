"""Corner-padded ``k x k`` convolutions in the four orientations, and channel-grouped versions.

`tfinv.ops.triangular_conv` provides one masked convolution, ``masked_conv(x, K, "corner")``:
the input is zero-padded by ``k - 1`` rows on top and ``k - 1`` columns on the left, so output
``(i, j)`` reads the ``k x k`` window whose bottom-right corner is ``(i, j)`` ("TL", top-left
padding). The other three orientations of FInC / Inverse-Flow are the same map conjugated by
spatial flips ``F`` (``F`` is its own inverse):

* ``"TR"`` (top and right padding; reads up and to the right): flip ``W``;
* ``"BL"`` (bottom and left padding; reads down and to the left): flip ``H``;
* ``"BR"`` (bottom and right padding; reads down and to the right): flip ``H`` and ``W``.

so ``conv_o(x) = F_o(masked_conv(F_o(x), K))`` and ``solve_o(y) = F_o(solve(F_o(y), K))``, with
the same triangular structure and log-det ``H * W * sum log|diag K[k-1, k-1]|``.

The channel-grouped form (FInC's unit) applies orientation ``o_g`` to channel group ``g`` only,
with its own ``(k, k, C_g, C_g)`` kernel. All groups run as **one** convolution (or one solve):
every group is flipped into the TL orientation, the groups' kernels are placed on the diagonal
of a block-diagonal ``(k, k, C, C)`` kernel (still masked and triangular), and the result is
flipped back group by group. A block-diagonal solve is exactly the groups' independent solves
run side by side, as FInC's parallel inverse does.

References:
    1. Kallappa, Nagar & Varma, "FInC Flow: Fast and Invertible k x k Convolutions for
       Normalizing Flows", arXiv:2301.09266.
    2. Nagar & Varma, "Parallel Backpropagation for Inverse of a Convolution with Application to
       Normalizing Flows", AISTATS 2025.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tfinv.ops import triangular_conv as tc

__all__ = [
    "ORIENTATIONS",
    "block_diagonal",
    "flip",
    "grouped_conv",
    "grouped_solve",
    "oriented_conv",
    "oriented_solve",
    "reverse_channels",
]

#: Spatial axes flipped to turn the TL (top-left padded) convolution into each orientation.
ORIENTATIONS: dict[str, tuple[int, ...]] = {"TL": (), "TR": (-2,), "BL": (-3,), "BR": (-3, -2)}


def _axes(orientation: str) -> tuple[int, ...]:
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {sorted(ORIENTATIONS)}, got {orientation!r}")
    return ORIENTATIONS[orientation]


def flip(x, orientation: str) -> tf.Tensor:
    """``F_o x``: the spatial flips of orientation ``o`` (an involution)."""
    axes = _axes(orientation)
    return tf.reverse(x, axis=list(axes)) if axes else x


def reverse_channels(x) -> tf.Tensor:
    """Reverses the channel axis (turns an upper-triangular channel order into a lower one)."""
    return tf.reverse(x, axis=[-1])


def oriented_conv(x, kernel, orientation: str = "TL") -> tf.Tensor:
    """``F_o(K * pad_TL(F_o x))``; ``kernel`` masked for the ``"corner"`` anchor."""
    return flip(tc.masked_conv(flip(x, orientation), kernel, "corner"), orientation)


def oriented_solve(y, kernel, orientation: str = "TL", order: str = "wavefront") -> tf.Tensor:
    """``x`` with ``oriented_conv(x, kernel, orientation) == y`` (a flipped corner solve)."""
    return flip(tc.solve(flip(y, orientation), kernel, "corner", order), orientation)


def block_diagonal(kernels: Sequence[tf.Tensor]) -> tf.Tensor:
    """``(k, k, C_g, C_g)`` kernels -> one ``(k, k, sum C_g, sum C_g)`` block-diagonal kernel."""
    total = sum(int(k.shape[-1]) for k in kernels)
    blocks, start = [], 0
    for kernel in kernels:
        size = int(kernel.shape[-1])
        pad = [[0, 0], [0, 0], [start, total - start - size], [start, total - start - size]]
        blocks.append(tf.pad(kernel, pad))
        start += size
    return tf.add_n(blocks)


def _flip_groups(x, orientations: Sequence[str]) -> tf.Tensor:
    groups = tf.split(x, len(orientations), axis=-1)
    return tf.concat([flip(g, o) for g, o in zip(groups, orientations)], axis=-1)


def grouped_conv(x, kernels: Sequence[tf.Tensor], orientations: Sequence[str]) -> tf.Tensor:
    """Channel group ``g`` (equal splits) convolved with ``kernels[g]`` in ``orientations[g]``;
    one convolution with the block-diagonal kernel. Shapes ``(B, H, W, C) -> (B, H, W, C)``."""
    if len(kernels) != len(orientations):
        raise ValueError(f"grouped_conv needs one orientation per kernel, got {len(kernels)} "
                         f"kernels and {len(orientations)} orientations")
    y = tc.masked_conv(_flip_groups(x, orientations), block_diagonal(kernels), "corner")
    return _flip_groups(y, orientations)


def grouped_solve(y, kernels: Sequence[tf.Tensor], orientations: Sequence[str],
                  order: str = "wavefront") -> tf.Tensor:
    """The inverse of `grouped_conv`: every group's solve at once (one block-diagonal solve)."""
    if len(kernels) != len(orientations):
        raise ValueError(f"grouped_solve needs one orientation per kernel, got {len(kernels)} "
                         f"kernels and {len(orientations)} orientations")
    x = tc.solve(_flip_groups(y, orientations), block_diagonal(kernels), "corner", order)
    return _flip_groups(x, orientations)
