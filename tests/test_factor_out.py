"""FactorOut and the composed multi-scale Glow beyond the harness (tests/test_contract.py runs
their cases): the latent layout of the hand-written multi-scale walk Glow used to have, the
learned split prior as a density, and clear errors."""

import numpy as np
import pytest
import tensorflow as tf

from tfinv import blocks, layers
from tfinv.models import Glow
from tfinv.testing.contract import perturb_weights, relative_error


def _counts(n=3, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(0.5, 16.5, (n, 8, 8, 1)).astype(np.float32))


def test_glow_latent_is_the_multi_scale_walk():
    """z = [level-0 factored half, level-1 factored half, ..., last level], each flattened: the
    layout of the former hand-written Glow (and of its exported graphs)."""
    model = Glow((8, 8, 1), levels=3, steps_per_level=1, hidden_channels=8)
    x = _counts()
    model.initialize(x)
    perturb_weights(model, 0.05)
    h, parts = model.preprocess.forward(x), []
    for level, scale in enumerate(model.scales):
        h = scale.forward(h)
        if level < len(model.scales) - 1:
            half = h.shape[-1] // 2
            parts.append(h[..., half:])
            h = h[..., :half]
    parts.append(h)
    manual = tf.concat([tf.reshape(p, [3, -1]) for p in parts], axis=-1)
    # the same ops in the same order run eagerly: bit-identical
    assert relative_error(type(model).forward.eager(model, x)[0], manual) == 0.0
    # compiled inference (XLA by default) may fuse and reassociate float32 sums
    assert relative_error(model.forward(x)[0], manual) <= 1e-6


def test_learned_split_prior_is_a_gaussian_density_on_the_factored_half():
    """log p under the standardising factor-out equals Glow's form: the base density of the kept
    path plus log N(x_b; mu(x_a), sigma(x_a)^2) of the factored half."""
    factor = layers.FactorOut(blocks.InvertibleSequential([layers.ActNorm()]), learned_prior=True)
    x = tf.constant(np.random.default_rng(1).standard_normal((2, 4, 4, 4)).astype(np.float32))
    factor.build(x.shape)
    perturb_weights(factor, 0.3)
    z, log_det = factor.forward_and_log_det(x)
    normal = lambda t, loc, scale: -0.5 * ((t - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)
    model_log_prob = np.sum(normal(z.numpy(), 0.0, 1.0), -1) + log_det.numpy()
    x_a, x_b = x[..., :2], x[..., 2:]
    mean, log_scale = factor._prior(x_a)
    kept, kept_log_det = factor.inner.forward_and_log_det(x_a)
    glow_form = (np.sum(normal(kept.numpy(), 0.0, 1.0), (1, 2, 3)) + kept_log_det.numpy()
                 + np.sum(normal(x_b.numpy(), mean.numpy(), np.exp(log_scale.numpy())), (1, 2, 3)))
    assert relative_error(model_log_prob, glow_form) < 1e-5
    assert float(tf.reduce_max(tf.abs(log_scale))) > 1e-2  # the prior is not the identity here


def test_factor_out_errors():
    with pytest.raises(ValueError, match=r"keeps 0 of 1 channels; it needs 1 <= keep_channels < C"):
        layers.FactorOut(blocks.InvertibleSequential([layers.ActNorm()])).build((None, 4, 4, 1))
    with pytest.raises(ValueError, match="keep_channels must be >= 1"):
        layers.FactorOut(blocks.InvertibleSequential([layers.ActNorm()]), keep_channels=0)
    with pytest.raises(TypeError, match="takes an InvertibleLayer as inner"):
        layers.FactorOut("not a layer")
    with pytest.raises(ValueError, match="pass layer_input_shape"):
        layers.Inverted(layers.Patchify(2)).build((None, 6, 12))
