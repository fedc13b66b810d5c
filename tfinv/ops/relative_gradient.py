"""Fully connected layers ``y = x W^T`` and ``log|det W|`` with the ordinary or the relative gradient.

For a square weight ``W`` (output index first) and a loss ``L``, the ordinary gradient is
``G = dL/dW``; the relative gradient of Gresele et al. is ``G W^T W`` (the steepest descent
direction for perturbations ``W -> (I + E) W``). Two facts make it cheap:

* The log-det term: ``d log|det W| / dW = W^-T`` (an ``O(D^3)`` inverse), and
  ``W^-T W^T W = W``: its relative gradient costs nothing.
* The data term: backpropagation gives ``G = Delta^T X`` (``Delta = dL/dY`` and ``X`` the layer's
  inputs, one row per example), so ``G W^T W = Delta^T (X W^T) W = Delta^T (Y W)``: two
  ``(N, D) x (D, D)``-sized products, ``O(N D^2)``, with the layer's own output ``Y``.

`dense` and `log_abs_det` attach these gradients through ``tf.custom_gradient``; everything
else about the backward pass (the gradient with respect to ``x`` that flows to earlier layers)
is the ordinary one, as in the paper. ``gradient="ordinary"`` gives the true gradients, with
``W^-T`` from ``tf.linalg.inv`` (one ``O(D^3)`` inverse per step, as autodiff of any
log-determinant needs).

References: Gresele, Fissore, Javaloy, Schölkopf & Hyvärinen, "Relative gradient optimization
of the Jacobian term in unsupervised deep learning", NeurIPS 2020, arXiv:2006.15090; Amari,
"Natural gradient works efficiently in learning", Neural Computation 10(2), 1998.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["GRADIENTS", "dense", "log_abs_det", "qr_log_abs_det"]

GRADIENTS = ("ordinary", "relative")


def _check(gradient: str) -> None:
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")


def qr_log_abs_det(w: tf.Tensor) -> tf.Tensor:
    """``log|det W|`` as ``sum log|diag R|`` of ``W = QR`` (XLA compiles QR; no ``slogdet``)."""
    r = tf.linalg.qr(w)[1]
    return tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(r))))


def dense(x: tf.Tensor, w: tf.Tensor, gradient: str = "ordinary") -> tf.Tensor:
    """``y = x W^T`` on the last axis of ``x`` (any leading axes); ``W`` is ``(D_out, D_in)``.

    ``gradient="relative"``: the gradient returned for ``W`` is ``Delta^T (Y W)``, the relative
    gradient ``G W^T W`` of the ordinary ``G = Delta^T X`` (square ``W``); the gradient for
    ``x`` is the ordinary ``Delta W``.
    """
    _check(gradient)
    if gradient == "ordinary":
        return tf.matmul(x, w, transpose_b=True)

    @tf.custom_gradient
    def relative_dense(x, w):
        y = tf.matmul(x, w, transpose_b=True)

        def grad(upstream):
            d_out, d_in = int(w.shape[0]), int(w.shape[1])
            delta = tf.reshape(upstream, [-1, d_out])
            outputs = tf.reshape(y, [-1, d_out])
            # Delta^T (Y W): O(N D^2), no D x D x D product
            return tf.matmul(upstream, w), tf.matmul(delta, tf.matmul(outputs, w), transpose_a=True)

        return y, grad

    return relative_dense(x, w)


def log_abs_det(w: tf.Tensor, gradient: str = "ordinary", value: bool = True) -> tf.Tensor:
    """``log|det W|`` (a scalar) with the gradient ``W^-T`` (ordinary) or ``W`` (relative).

    ``value=False`` returns 0 with the same gradient: the optimisation needs only the gradient,
    and the value costs an ``O(D^3)`` factorisation (QR here).
    """
    _check(gradient)

    @tf.custom_gradient
    def log_det(w):
        result = qr_log_abs_det(w) if value else tf.zeros([], w.dtype)

        def grad(upstream):
            direction = w if gradient == "relative" else tf.transpose(tf.linalg.inv(w))
            return upstream * direction

        return result, grad

    return log_det(w)
