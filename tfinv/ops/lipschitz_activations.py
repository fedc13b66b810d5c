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
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["LIP_SWISH_SCALE", "C_LIP_SWISH_SCALE", "lip_swish_linearize", "c_lip_swish_linearize"]

#: ``max_t d/dt [t sigmoid(t)]`` rounded up: dividing by it makes swish 1-Lipschitz.
LIP_SWISH_SCALE = 1.1
#: ``max_x sqrt(f'(x)^2 + f'(-x)^2)`` for LipSwish ``f``, rounded up.
C_LIP_SWISH_SCALE = 1.004


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
