"""Reversible blocks: invertible layers whose backward pass can rebuild their inputs.

Backpropagation through a stack of invertible blocks need not store activations: the input of
every block is a function of its output (the inverse), so the backward pass can walk the stack
from the top, rebuild each block's input from its output, recompute the block under a tape and
take the vector-Jacobian product (`tfinv.blocks.ReversibleStack`). The hook that does this for one
block is ``reconstruct_and_vjp``:

    x, dx, variable_grads = block.reconstruct_and_vjp(y, dy, d_log_det, variables)

* `vjp_by_recomputation` does it for *any* `InvertibleLayer` (inverse, then the forward again
  under a tape): two evaluations of the block per backward step.
* `TwoStreamBlock`, the additive two-stream coupling of RevNet (``y1 = x1 + F(x2)``,
  ``y2 = x2 + G(y1)``), does it with one evaluation of ``F`` and ``G``: the inverse *is* the
  recomputation (Gomez et al. 2017, Algorithm 1), so reversible backprop costs one extra forward.

References: Gomez, Ren, Urtasun & Grosse, "The Reversible Residual Network", arXiv:1707.04585;
Mangalam et al., "Reversible Vision Transformers", arXiv:2302.04869.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det

__all__ = ["ReversibleBlock", "TwoStreamBlock", "add_gradients", "reduce_to_batch", "vjp_by_recomputation"]


def reduce_to_batch(log_det: tf.Tensor) -> tf.Tensor:
    """Sums a log-det over every axis after the first (the batch axis)."""
    rank = len(log_det.shape)
    return log_det if rank <= 1 else tf.reduce_sum(log_det, axis=list(range(1, rank)))


def add_gradients(total: list, new: Sequence) -> list:
    """Element-wise ``total + new`` where ``None`` means zero (unconnected variable)."""
    new = [g if g is None or isinstance(g, tf.Tensor) else tf.convert_to_tensor(g) for g in new]
    return [t if n is None else (n if t is None else t + n) for t, n in zip(total, new)]


def vjp_by_recomputation(layer: InvertibleLayer, y, dy, d_log_det, variables: Sequence):
    """Rebuilds ``x = layer.inverse(y)`` and returns ``(x, dx, variable_grads)``, the VJP of
    ``(y, log_det) = layer.forward(x)`` with the cotangents ``(dy, d_log_det)``.

    Works for every invertible layer (log-dets that depend on ``x`` included); costs the inverse
    plus a forward under a tape. ``d_log_det`` has the batch shape (or is ``None``);
    ``variable_grads`` is aligned with ``variables`` (``None`` where unconnected). ``variables``
    may also be tensors that stand in for the layer's weights (``keras.StatelessScope``).
    """
    x = tf.stop_gradient(layer.inverse_and_log_det(y)[0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        tape.watch(list(variables))  # values standing in for the weights are watched too
        y_again, log_det = layer.forward_and_log_det(x)
        log_det = reduce_to_batch(log_det)
    targets, cotangents = [y_again], [dy]
    if d_log_det is not None:
        targets.append(log_det)
        cotangents.append(d_log_det)
    grads = tape.gradient(targets, [x, *variables], output_gradients=cotangents)
    dx = grads[0] if grads[0] is not None else tf.zeros_like(x)
    return x, dx, list(grads[1:])


class ReversibleBlock(InvertibleLayer):
    """An invertible layer usable in `tfinv.blocks.ReversibleStack`'s memory-efficient backprop.

    Subclasses may override ``reconstruct_and_vjp`` with a cheaper form; the default is
    `vjp_by_recomputation`.
    """

    def reconstruct_and_vjp(self, y, dy, d_log_det, variables: Sequence):
        """``(x, dx, variable_grads)``: the input rebuilt from the output ``y`` and the VJP of the
        forward map at ``x`` with cotangents ``(dy, d_log_det)`` (see `vjp_by_recomputation`)."""
        return vjp_by_recomputation(self, y, dy, d_log_det, variables)


class TwoStreamBlock(ReversibleBlock):
    """RevNet's additive two-stream coupling; subclasses give the residual functions ``F`` and ``G``.

    The input holds two streams of ``stream_channels`` each, concatenated on the last axis:
    ``x = [x1, x2]``. Forward::

        y1 = x1 + F(x2)
        y2 = x2 + G(y1)

    Inverse: ``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)`` (exact: ``F`` and ``G`` need not be
    invertible).

    Log-det: 0. The map is the composition of two additive couplings,
    ``(x1, x2) -> (x1 + F(x2), x2)`` and ``(y1, x2) -> (y1, x2 + G(y1))``, whose Jacobians are
    block unit-triangular (``[[I, dF], [0, I]]`` and ``[[I, 0], [dG, I]]``), so each has
    determinant exactly 1 whatever ``F`` and ``G`` are: the block is volume preserving, and the
    zero log-det is returned with the batch shape.

    Subclasses write ``event_ndims``, ``_build_residuals(stream_shape)`` (create ``F`` and ``G``
    for inputs of shape ``stream_shape``, batch first), ``_residual_f``, ``_residual_g`` and
    ``get_config``; ``_check_stream_channels(channels)`` may add requirements.
    """

    def build(self, input_shape):
        channels = self.input_event_shape[-1]
        if channels is None or channels % 2:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' splits the last axis into two equal streams: "
                f"it must be even, got {channels} (input shape {tuple(input_shape)})"
            )
        self._check_stream_channels(channels // 2)
        self.stream_channels = channels // 2
        self._build_residuals(tuple(input_shape[:-1]) + (channels // 2,))
        super().build(input_shape)

    def _check_stream_channels(self, channels: int) -> None:
        del channels

    def _build_residuals(self, stream_shape: tuple) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _build_residuals")

    def _residual_f(self, x2):
        raise NotImplementedError(f"{type(self).__name__} must implement _residual_f")

    def _residual_g(self, y1):
        raise NotImplementedError(f"{type(self).__name__} must implement _residual_g")

    def _split(self, t):
        return t[..., : self.stream_channels], t[..., self.stream_channels :]

    # ------------------------------------------------------------------ directions
    def _forward_and_log_det(self, x):
        x1, x2 = self._split(x)
        y1 = x1 + self._residual_f(x2)
        y2 = x2 + self._residual_g(y1)
        return tf.concat([y1, y2], axis=-1), batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, y):
        y1, y2 = self._split(y)
        x2 = y2 - self._residual_g(y1)
        x1 = y1 - self._residual_f(x2)
        return tf.concat([x1, x2], axis=-1), batch_log_det(0.0, y, self.event_ndims)

    def reconstruct_and_vjp(self, y, dy, d_log_det, variables: Sequence):
        """Gomez et al.'s Algorithm 1: the inverse evaluates ``G(y1)`` and ``F(x2)`` under tapes,
        which is all the VJP needs (no second forward). ``d_log_det`` is unused: the log-det is
        the constant 0."""
        del d_log_det
        y1, y2 = self._split(y)
        dy1, dy2 = self._split(dy)
        with tf.GradientTape() as tape_g:
            tape_g.watch(y1)
            tape_g.watch(list(variables))  # tensors standing in for the weights, if any
            g = self._residual_g(y1)
        # y1 feeds y2 through G: its total cotangent is dy1 + (dG/dy1)^T dy2.
        grads_g = tape_g.gradient(g, [y1, *variables], output_gradients=dy2)
        dz1 = dy1 + grads_g[0]
        x2 = tf.stop_gradient(y2 - g)
        with tf.GradientTape() as tape_f:
            tape_f.watch(x2)
            tape_f.watch(list(variables))
            f = self._residual_f(x2)
        grads_f = tape_f.gradient(f, [x2, *variables], output_gradients=dz1)
        x1 = y1 - f
        dx = tf.concat([dz1, dy2 + grads_f[0]], axis=-1)
        return tf.concat([x1, x2], axis=-1), dx, add_gradients(list(grads_g[1:]), grads_f[1:])
