"""Coupling-layer math (Dinh et al., NICE arXiv:1410.8516 and RealNVP arXiv:1605.08803).

An input is split by a binary mask into a conditioning part ``x_a`` (passed through) and a
transformed part ``x_b``; a conditioner network sees only ``x_a``, so the Jacobian is triangular.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def checkerboard_mask(height: int, width: int, parity: int = 0) -> np.ndarray:
    """``(H, W, 1)`` float mask, 1 where ``(i + j + parity)`` is even (the conditioning squares)."""
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return (((i + j + parity) % 2) == 0).astype(np.float32)[..., None]


def glow_scale(raw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Glow's bounded scale ``s = sigmoid(raw + 2)`` and ``log s``; ``s`` is in (0, 1), near 0.88 at 0.

    ``log s = -softplus(-(raw + 2))`` is computed stably.
    """
    shifted = raw + 2.0
    return tf.sigmoid(shifted), -tf.nn.softplus(-shifted)


def soft_clamp_log_scale(raw: tf.Tensor, clamp: float) -> tf.Tensor:
    """The cINN paper's soft clamp of a log-scale: ``log s = (2 clamp / pi) * atan(raw / clamp)``.

    ``log s`` lies in ``(-clamp, clamp)`` for every ``raw`` (so ``s`` and ``1 / s`` are at most
    ``exp(clamp)``), is ``raw`` near 0 (slope 1) and smooth; the log-det of the coupling is this
    bounded ``log s`` exactly.
    """
    clamp = tf.cast(clamp, raw.dtype)
    return (2.0 / np.pi) * clamp * tf.atan(raw / clamp)


def clamped_affine_forward(x_b, shift, raw_scale, clamp: float):
    """``y_b = x_b * exp(log s) + shift`` with the soft-clamped ``log s``; returns ``(y_b, log s)``."""
    log_scale = soft_clamp_log_scale(raw_scale, clamp)
    return x_b * tf.exp(log_scale) + shift, log_scale


def clamped_affine_inverse(y_b, shift, raw_scale, clamp: float):
    """``x_b = (y_b - shift) * exp(-log s)``; returns ``(x_b, log s)`` (forward's log s)."""
    log_scale = soft_clamp_log_scale(raw_scale, clamp)
    return (y_b - shift) * tf.exp(-log_scale), log_scale


def affine_forward(x_b, shift, raw_scale):
    """``y_b = (x_b + shift) * s``; returns ``(y_b, log s)`` (element-wise)."""
    scale, log_scale = glow_scale(raw_scale)
    return (x_b + shift) * scale, log_scale


def affine_inverse(y_b, shift, raw_scale):
    """``x_b = y_b / s - shift``; returns ``(x_b, log s)`` (element-wise, forward's log s)."""
    scale, log_scale = glow_scale(raw_scale)
    return y_b / scale - shift, log_scale
