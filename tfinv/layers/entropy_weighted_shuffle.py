"""EIW-Flow's feature-dependent channel weighting and shuffle (Chen et al., arXiv:2407.04958)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.ops import channel_weighting


@keras.saving.register_keras_serializable(package="tfinv")
class EntropyWeightedShuffle(InvertibleLayer):
    """``z = concat(sort_w(w(x_a) * x_b), x_a)``: the channels ``x_b`` are weighted by
    ``w = C_b softmax(mean_{h,w}(x_a) K + b)``, computed from the other channels ``x_a``, then
    shuffled into decreasing order of weight, and the two halves swap places.

    ``x_a`` is the first ``C // 2`` channels, ``x_b`` the other ``C_b = C - C // 2``.
    Inverse: ``x_a`` is the last ``C // 2`` channels of ``z``; ``w`` and its order follow from it;
    the order is undone (a permutation matrix, transposed) and ``x_b = z_b / w``.
    Log-det: ``H W sum_c log w_c`` (the order and the swap are permutations: log-det 0). As
    ``sum_c w_c = C_b``, the log-det is ``<= 0`` and 0 only at uniform (highest-entropy) weights:
    maximum likelihood trades the concentration of the weights against what it buys downstream.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``C >= 2``; log-det ``(B,)``.

    The map is smooth except where two weights tie (the order switches there; ties have measure
    zero and keep channel order), so the density is exact almost everywhere. Both directions are
    matmuls, a softmax, ``top_k`` and ``one_hot``: XLA compiles them and they export to ONNX.

    Differences from the paper: this is our reading of EIW-Flow's ``Shuffle`` (channel weights
    generated from the features, the weighted variables shuffled by their weights before the
    split) from the paper's abstract and summary; its Solver network and its placement before each
    multi-scale split were not reproduced. Here the weights come from a pooled linear map of the
    other half (so the inverse can recompute them), and ``Glow(linear="entropy_weighted")`` puts
    the layer after the 1x1 convolution of every step.

    Args:
        seed: seed of the kernel's initialisation (normal, standard deviation 0.05: weights
            start near uniform, in a seeded order).

    References: Chen, Du, Li, Zeng & Paisley, "Entropy-Informed Weighting Channel Normalizing
    Flow for Deep Generative Models", arXiv:2407.04958.
    """

    event_ndims = 3

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)

    def build(self, input_shape):
        shape = tuple(tf.TensorShape(input_shape).as_list())
        if len(shape) != 4 or shape[-1] is None or shape[-1] < 2:
            raise ValueError(
                f"EntropyWeightedShuffle '{self.name}' needs images (B, H, W, C) with C >= 2 "
                f"(weights of one half computed from the other), got shape {shape}"
            )
        self._conditioning = shape[-1] // 2
        weighted = shape[-1] - self._conditioning
        self.kernel = self.add_weight(name="kernel", shape=(self._conditioning, weighted), 
                                      initializer=keras.initializers.RandomNormal(stddev=0.05, seed=self.seed))
        self.bias = self.add_weight(name="bias", shape=(weighted,), initializer="zeros")
        super().build(input_shape)

    def _weights(self, x_a):
        weights = channel_weighting.channel_weights(x_a, self.kernel, self.bias)
        positions = tf.cast(tf.reduce_prod(tf.shape(x_a)[-3:-1]), weights.dtype)
        log_det = positions * tf.reduce_sum(tf.math.log(weights), axis=-1)
        return weights, channel_weighting.sorting_permutation(weights), log_det

    def _forward_and_log_det(self, x):
        x_a, x_b = x[..., : self._conditioning], x[..., self._conditioning :]
        weights, permutation, log_det = self._weights(x_a)
        weighted = x_b * weights[:, None, None, :]
        return tf.concat([channel_weighting.permute_channels(weighted, permutation), x_a], axis=-1), log_det

    def _inverse_and_log_det(self, z):
        z_b, x_a = z[..., : -self._conditioning], z[..., -self._conditioning :]
        weights, permutation, log_det = self._weights(x_a)
        weighted = channel_weighting.permute_channels(z_b, permutation, inverse=True)
        return tf.concat([x_a, weighted / weights[:, None, None, :]], axis=-1), -log_det

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
