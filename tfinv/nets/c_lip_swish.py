"""CLipSwish: concatenated LipSwish, 1-Lipschitz from C to 2C channels."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.nets.lip_swish import LipSwish
from tfinv.ops.lipschitz_activations import c_lip_swish_linearize


@keras.saving.register_keras_serializable(package="tfinv")
class CLipSwish(LipSwish):
    """``x -> [f(x), f(-x)] / 1.004`` on the last axis, ``f`` = `LipSwish` (learnable ``beta``).

    Keeps the information LipSwish loses for negative inputs while staying 1-Lipschitz: the
    Jacobian's norm is ``max sqrt(f'(x)^2 + f'(-x)^2) / 1.004 <= 1``.
    Shapes: ``(..., C) -> (..., 2C)``.
    References: Perugachi-Diaz et al., "Invertible DenseNets with Concatenated LipSwish",
    arXiv:2102.02694, §3.2.
    """

    def linearize(self, x: tf.Tensor):
        value, derivative = c_lip_swish_linearize(x, self.beta(x.dtype))
        return value, lambda t: derivative * tf.concat([t, t], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2 * int(input_shape[-1]),)
