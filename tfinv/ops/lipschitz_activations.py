"""1-Lipschitz activations with their derivatives, for the Lipschitz-constrained residual branches
of invertible residual networks. Each ``*_linearize`` returns ``(value, derivative)`` so that a
Jacobian-vector product is an element-wise product (forward mode, no autodiff graph).

LipSwish (Residual Flows, arXiv:1906.02735, §4.2):
``f(x) = x sigmoid(beta x) / 1.1`` with ``beta = softplus(beta_raw) > 0``. The swish derivative
``s(t) + t s(t)(1 - s(t))`` (``t = beta x``) peaks at ~1.0998, so ``f`` is 1-Lipschitz for every
``beta``, and its derivative is a function of ``beta x`` only.

CLipSwish (i-DenseNet, arXiv:2102.02694, §3.2): ``x -> [f(x), f(-x)] / 1.004`` (concatenated on the
channel axis: C -> 2C). Its Jacobian stacks ``diag(f'(x))`` and ``diag(-f'(-x))``, so its norm is
``max_x sqrt(f'(x)^2 + f'(-x)^2) / 1.004``, again a function of ``beta x`` only, <= 1 (the constant
1.004 is this maximum, measured numerically).

CPila (Monotone Flows, arXiv:2210.08176): Pila with ``k = 5``,
``pila(x) = x`` for ``x > 0`` and ``(k^2 x^3 / 2 - k x^2 + x) exp(k x)`` for ``x <= 0``
(``C^2`` at 0: value 0, slope 1, curvature 0), concatenated as
``x -> [pila(x - 0.2), pila(-x - 0.2)] / 1.06`` (C -> 2C). Its derivative is
``pila'(x) = h(k x)`` with ``h(u) = exp(u) (u^3/2 + u^2/2 - u + 1)`` for ``u <= 0`` (1 above).
Bound: ``h'(u) = exp(u) u^2 (u/2 + 2)``, so on ``u <= 0`` ``h`` falls from 0 (at ``-inf``) to its
minimum ``h(-4) = -19 e^-4 = -0.348`` and rises to ``h(0) = 1``: ``|pila'| <= 1``. CPila's
Jacobian norm is ``max_x sqrt(pila'(x - 0.2)^2 + pila'(-x - 0.2)^2)``. For ``|x| > 0.2`` one
slope is 1 and the other is ``h(u)`` with ``u < -2``, largest in size at ``u = -4`` (``|x| = 0.6``):
``sqrt(1 + 361 e^-8) = 1.05882 < 1.06``. For ``|x| <= 0.2`` both slopes are in ``[h(-2), 1]`` and
the norm is at most 1.043 (at ``|x| = 0.075``; grid-checked in the tests). So CPila is
1-Lipschitz (``<= 0.9989``).
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["LIP_SWISH_SCALE", "C_LIP_SWISH_SCALE", "PILA_K", "C_PILA_SHIFT", "C_PILA_SCALE",
           "lip_swish_linearize", "c_lip_swish_linearize", "pila_linearize", "c_pila_linearize"]

#: ``max_t d/dt [t sigmoid(t)]`` rounded up: dividing by it makes swish 1-Lipschitz.
LIP_SWISH_SCALE = 1.1
#: ``max_x sqrt(f'(x)^2 + f'(-x)^2)`` for LipSwish ``f``, rounded up.
C_LIP_SWISH_SCALE = 1.004
#: Pila's sharpness ``k`` in CPila (the paper's value).
PILA_K = 5.0
#: CPila's input shift: ``[pila(x - 0.2), pila(-x - 0.2)]``.
C_PILA_SHIFT = 0.2
#: CPila's normalisation, above its Jacobian norm ``sqrt(1 + 361 e^-8) = 1.05882``.
C_PILA_SCALE = 1.06


def lip_swish_linearize(x: tf.Tensor, beta: tf.Tensor):
    """``(x sigmoid(beta x) / 1.1, d/dx of it)`` element-wise; ``beta > 0`` broadcasts."""
    s = tf.sigmoid(beta * x)
    value = x * s / LIP_SWISH_SCALE
    derivative = (s + beta * x * s * (1.0 - s)) / LIP_SWISH_SCALE
    return value, derivative


def c_lip_swish_linearize(x: tf.Tensor, beta: tf.Tensor):
    """``([f(x), f(-x)] / 1.004, [f'(x), -f'(-x)] / 1.004)`` on the last axis (C -> 2C).

    The derivative part is the diagonal of each half of the Jacobian: a tangent ``v`` maps to
    ``derivative * [v, v]``.
    """
    both = tf.concat([x, -x], axis=-1)
    value, derivative = lip_swish_linearize(both, beta)
    channels = tf.shape(x)[-1]
    sign = tf.concat([tf.ones([channels], x.dtype), -tf.ones([channels], x.dtype)], 0)
    return value / C_LIP_SWISH_SCALE, derivative * sign / C_LIP_SWISH_SCALE


def pila_linearize(x: tf.Tensor, k: float = PILA_K):
    """``(pila(x), pila'(x))`` element-wise: ``x`` for ``x > 0``, ``(k^2 x^3/2 - k x^2 + x) e^{k x}``
    otherwise; the derivative ``e^{k x} (k^3 x^3/2 + k^2 x^2/2 - k x + 1)`` (1 for ``x > 0``)."""
    u = k * tf.minimum(x, 0.0)  # the exponential branch sees x <= 0 only: no overflow, no NaN gradient
    e = tf.exp(u)
    negative = x <= 0.0
    value = tf.where(negative, (0.5 * u * u * u - u * u + u) * e / k, x)
    derivative = tf.where(negative, (0.5 * u * u * u + 0.5 * u * u - u + 1.0) * e, tf.ones_like(x))
    return value, derivative


def c_pila_linearize(x: tf.Tensor, k: float = PILA_K):
    """``([pila(x - 0.2), pila(-x - 0.2)] / 1.06, [pila'(x - 0.2), -pila'(-x - 0.2)] / 1.06)`` on
    the last axis (C -> 2C); as for CLipSwish, a tangent ``v`` maps to ``derivative * [v, v]``."""
    value, derivative = pila_linearize(tf.concat([x, -x], axis=-1) - C_PILA_SHIFT, k)
    channels = tf.shape(x)[-1]
    sign = tf.concat([tf.ones([channels], x.dtype), -tf.ones([channels], x.dtype)], 0)
    return value / C_PILA_SCALE, derivative * sign / C_PILA_SCALE
