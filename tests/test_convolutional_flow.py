"""Karami et al.'s convolutional flow (DataAdaptiveConv, the S-Log gate, ConvolutionalFlowStep)
and Finzi et al.'s InvertibleCNN classifier.

Their contract cases are in `tfinv.testing.cases()` (run by tests/test_contract.py); this file
checks the math, the spectrum guarantee, the classifier's reconstruction and the bad inputs.
"""

import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinv.blocks.convolutional_flow_step import ConvolutionalFlowStep
from tfinv.export.onnx import prepare
from tfinv.layers.data_adaptive_conv import DataAdaptiveConv
from tfinv.layers.s_log import SLog
from tfinv.models.invertible_cnn import InvertibleCNN
from tfinv.ops import adaptive_conv
from tfinv.testing import contract
from tfinv.testing.cases import Case, cases


# ----------------------------------------------------------------------------- DataAdaptiveConv
def _reference_depthwise_conv(x, taps, k):
    """NumPy: per example and channel, sum of rolled images (circular cross-correlation)."""
    offsets = np.arange(k) - (k - 1) // 2
    out = np.zeros_like(x)
    for i, sh in enumerate(offsets):
        for j, sw in enumerate(offsets):
            out += taps[:, None, None, i * k + j, :] * np.roll(x, (-sh, -sw), axis=(1, 2))
    return out


def test_data_adaptive_conv_is_a_per_example_circular_convolution_of_x_b():
    layer, x = Case("c", lambda: DataAdaptiveConv(affine=False, hidden_channels=8), (3, 5, 4, 4)).build()
    z = np.asarray(layer.forward(x))
    x = np.asarray(x)
    np.testing.assert_array_equal(z[..., :2], x[..., :2])  # x_a passes through
    taps = np.asarray(layer._conditioned(tf.constant(x[..., :2]))[0])
    assert not np.allclose(taps[0], taps[1], atol=1e-4)  # kernels differ between examples
    np.testing.assert_allclose(z[..., 2:], _reference_depthwise_conv(x[..., 2:], taps, 3), atol=1e-5)
    # log-det = sum over frequencies and channels of log|DFT of the embedded kernel|
    height, width = 5, 4
    expected = []
    for b in range(3):
        total = 0.0
        for c in range(2):
            image = np.zeros((height, width))
            for i, sh in enumerate((-1, 0, 1)):
                for j, sw in enumerate((-1, 0, 1)):
                    image[(-sh) % height, (-sw) % width] += taps[b, 3 * i + j, c]
            total += np.sum(np.log(np.abs(np.fft.fft2(image))))
        expected.append(total)
    np.testing.assert_allclose(np.asarray(layer.forward_log_det_jacobian(x, event_ndims=3)), expected, rtol=1e-5)


def test_data_adaptive_conv_starts_as_identity_kernels():
    layer = DataAdaptiveConv(affine=False, hidden_channels=8)
    x = tf.random.stateless_normal((2, 4, 4, 4), seed=[1, 2])
    np.testing.assert_allclose(layer.forward(x), x, atol=1e-6)
    np.testing.assert_allclose(layer.forward_log_det_jacobian(x, event_ndims=3), [0.0, 0.0], atol=1e-5)


@pytest.mark.parametrize("bound", [0.5, 0.9])
def test_spectrum_stays_in_the_guaranteed_band_for_any_conditioner_output(bound):
    raw = tf.constant(100.0 * np.random.default_rng(0).standard_normal((64, 9, 3)), tf.float32)
    raw = tf.concat([raw, tf.one_hot(tf.fill([1, 3], 0), 9, axis=1) * 1e6], axis=0)  # one huge tap
    taps = adaptive_conv.bounded_taps(raw, 3, bound)
    re, im = adaptive_conv.depthwise_spectrum(taps, 3, 6, 5)
    modulus = np.sqrt(np.asarray(re) ** 2 + np.asarray(im) ** 2)
    assert modulus.min() > 1 - bound - 1e-6 and modulus.max() < 1 + bound + 1e-6
    assert modulus.min() < 1 - 0.8 * bound  # the band is reachable, not only a loose bound


def test_data_adaptive_conv_inverse_graph_is_standard_real_ops():
    layer, x = next(c for c in cases() if c.name == "DataAdaptiveConv").build()
    _, info = prepare(layer, "inverse", test_input=np.asarray(layer.forward(x)))
    ops = set(info.op_types)
    assert "MatMul" in ops and "Div" in ops
    assert not ops & {"DFT", "Loop", "If", "Det", "Einsum"}, ops


def test_data_adaptive_conv_bad_inputs():
    with pytest.raises(ValueError, match=r"H and W >= kernel_size 3, got \(H, W\) = \(2, 4\)"):
        DataAdaptiveConv(hidden_channels=4).build((1, 2, 4, 4))
    with pytest.raises(ValueError, match="at least 2 channels, got 1"):
        DataAdaptiveConv(hidden_channels=4).build((1, 4, 4, 1))
    layer = DataAdaptiveConv(hidden_channels=4)
    layer.build((1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"expects event shape \(4, 4, 4\), got \(4, 4, 6\)"):
        layer.forward(tf.zeros((1, 4, 4, 6)))
    with pytest.raises(ValueError, match=r"expects event shape \(4, 4, 4\), got \(4, 4, 3\)"):
        layer.inverse(tf.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="one batch axis"):
        layer.forward(tf.zeros((2, 1, 4, 4, 4)))
    with pytest.raises(ValueError, match="0 < bound < 1, got 1.0"):
        DataAdaptiveConv(bound=1.0)
    with pytest.raises(ValueError, match="kernel_size >= 1, got 0"):
        DataAdaptiveConv(kernel_size=0)


# ----------------------------------------------------------------------------- S-Log
def test_s_log_is_the_papers_gate_with_its_derivative():
    layer = SLog(initial_alpha=2.5)
    x = tf.constant(np.linspace(-30.0, 30.0, 48, dtype=np.float32).reshape(1, 4, 4, 3))
    z, log_det = layer.forward_and_log_det(x)
    xn = np.asarray(x, np.float64)
    np.testing.assert_allclose(z, np.sign(xn) * np.log(2.5 * np.abs(xn) + 1), rtol=1e-6)
    np.testing.assert_allclose(log_det, [np.sum(np.log(2.5 / (2.5 * np.abs(xn) + 1)))], rtol=1e-6)
    np.testing.assert_allclose(layer.inverse(z), x, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="initial_alpha > 0"):
        SLog(initial_alpha=0.0)


# ----------------------------------------------------------------------------- the block
def test_convolutional_flow_step_layers_and_errors():
    step = ConvolutionalFlowStep(hidden_channels=4, nonlinearity=False, linear="symmetric_conv")
    assert [type(l).__name__ for l in step.steps] == ["ActNorm", "SymmetricConv", "DataAdaptiveConv"]
    with pytest.raises(ValueError, match="linear must be one of"):
        ConvolutionalFlowStep(linear="fft")
    with pytest.raises(ValueError, match=r"H and W >= the effective kernel size 3"):
        ConvolutionalFlowStep(hidden_channels=4).build((1, 2, 2, 4))


# ----------------------------------------------------------------------------- InvertibleCNN
def _perturbed_cnn(**kwargs):
    model = InvertibleCNN((8, 8, 1), downsamplings=2, depth=1, input_scale=1 / 16, **kwargs)
    contract.perturb_weights(model.flow, scale=0.1, seed=1)
    return model


def _images(n=4, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(0, 16, (n, 8, 8, 1)).astype(np.float32))


@pytest.mark.parametrize("kwargs", [{}, {"downsampling": "orthogonal", "activation": "learnable_leaky_relu"},
                                    {"activation": "s_log", "head": "flatten", "head_channels": 4}])
def test_invertible_cnn_reconstructs_its_input_from_its_features(kwargs):
    model = _perturbed_cnn(**kwargs)
    x = _images()
    z = model.features(x)
    assert tuple(z.shape) == (4, 2, 2, 16)
    unperturbed = InvertibleCNN((8, 8, 1), downsamplings=2, depth=1, input_scale=1 / 16, **kwargs)
    assert contract.relative_error(z, unperturbed.features(x)) > 1e-2  # weights far from init
    # The standard round-trip tolerance (1e-5 relative per example, i.e. <= 1.6e-4 absolute on
    # pixel values up to 16); measured 1.4e-6 to 3.6e-6.
    error = contract.relative_error(model.reconstruct(z), x)
    assert error <= 1e-5, error
    assert tuple(model(x).shape) == (4, 10)


def test_invertible_cnn_fits_and_round_trips_a_keras_file():
    model = _perturbed_cnn()
    x, y = _images(8), tf.constant(np.arange(8) % 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [v.numpy() for v in model.trainable_variables]
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    moved = [np.max(np.abs(v.numpy() - b)) for v, b in zip(model.trainable_variables, before)]
    assert min(moved) > 0  # every weight (convolutions and head) learns
    assert float(model.conditioning_penalty()) > 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cnn.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, InvertibleCNN)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    z = model.features(x)
    np.testing.assert_allclose(loaded.features(x), z, atol=1e-6)
    np.testing.assert_allclose(loaded.reconstruct(z), model.reconstruct(z), atol=1e-5)


def test_invertible_cnn_bad_shapes_and_arguments():
    with pytest.raises(ValueError, match=r"H and W divisible by 4, got \(H, W\) = \(6, 8\)"):
        InvertibleCNN((6, 8, 1))
    model = InvertibleCNN((8, 8, 1), depth=1)
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 8, 8, 1\), got \(2, 8, 8, 3\)"):
        model(tf.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"latent must have shape \(batch, 2, 2, 16\), got \(2, 2, 2, 4\)"):
        model.reconstruct(tf.zeros((2, 2, 2, 4)))
    with pytest.raises(ValueError, match=r"head_channels must be in \[1, 16\]"):
        InvertibleCNN((8, 8, 1), head_channels=17)
    with pytest.raises(ValueError, match="activation must be one of"):
        InvertibleCNN((8, 8, 1), activation="relu")
    with pytest.raises(ValueError, match="downsampling must be one of"):
        InvertibleCNN((8, 8, 1), downsampling="pool")
