"""Fourier flows: the real DFT as a real matmul against NumPy's rfft, the stated DFT scalings,
and errors for sequences of the wrong rank or length. (Round trips, log-dets vs slogdet, fit,
XLA and ONNX of the layers and the model: tests/test_contract.py.)"""

import numpy as np
import pytest
import tensorflow as tf

from tfinv import layers
from tfinv.models import FourierFlow
from tfinv.ops import real_dft
from tfinv.testing.contract import perturb_weights


@pytest.mark.parametrize("length", [2, 3, 8, 9])
@pytest.mark.parametrize("norm", real_dft.NORMS)
def test_real_dft_is_numpy_rfft_in_the_real_layout(length, norm):
    x = np.random.default_rng(length).standard_normal((3, length, 2))
    spectrum = np.fft.rfft(x, axis=1, norm=norm)
    if norm == "ortho":  # numpy's "ortho" is unitary on C^T; the real layout scales by row norms
        weights = np.sqrt(np.concatenate([[1.0], np.full((length - 1) // 2, 2.0), [1.0] * (length % 2 == 0)]))
        spectrum = spectrum * weights[None, :, None]
    expected = np.concatenate([spectrum.real, spectrum.imag[:, 1 : (length - 1) // 2 + 1]], axis=1)
    got = real_dft.real_dft(tf.constant(x), norm).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(real_dft.inverse_real_dft(tf.constant(got), norm).numpy(), x, atol=1e-12)
    matrix = real_dft.real_dft_matrix(length, norm)
    assert real_dft.real_dft_log_abs_det(length, norm) == pytest.approx(np.linalg.slogdet(matrix)[1], abs=1e-10)
    if norm == "ortho":
        np.testing.assert_allclose(matrix @ matrix.T, np.eye(length), atol=1e-12)


def test_log_likelihood_does_not_depend_on_the_dft_scaling():
    """After the data-dependent ActNorm, the DFT's scaling cancels exactly: the DFT's constant
    log-det (0, or the row-norm sum for "backward"/"forward") is what makes the densities agree."""
    x = tf.constant(np.random.default_rng(1).standard_normal((16, 9, 2)).astype(np.float32))
    log_probs, filters = [], None
    for norm in real_dft.NORMS:
        flow = FourierFlow((9, 2), num_couplings=2, hidden_units=8, norm=norm).initialize(x)
        couplings = [l for l in flow.flow.steps if isinstance(l, layers.SpectralFilterCoupling)]
        if filters is None:  # non-identity filters, the same in every flow
            for i, coupling in enumerate(couplings):
                perturb_weights(coupling, 0.3, seed=i)
            filters = [c.get_weights() for c in couplings]
        for coupling, weights in zip(couplings, filters):
            coupling.set_weights(weights)
        log_probs.append(flow.log_prob(x).numpy())
    assert real_dft.real_dft_log_abs_det(9, "forward") < -10  # the scalings really differ
    np.testing.assert_allclose(log_probs[1], log_probs[0], rtol=1e-4)  # float32
    np.testing.assert_allclose(log_probs[2], log_probs[0], rtol=1e-4)  # float32


def test_wrong_rank_and_length_are_named():
    flow = FourierFlow((8, 2), num_couplings=1, hidden_units=4)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 8, 2\), got \(3, 8\)"):
        flow.log_prob(np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 8, 2\), got \(3, 7, 2\)"):
        flow.log_prob(np.zeros((3, 7, 2), np.float32))
    with pytest.raises(ValueError, match=r"input_shape \(T, channels\) with T >= 3"):
        FourierFlow((16,))
    with pytest.raises(ValueError, match=r"input_shape \(T, channels\) with T >= 3"):
        FourierFlow((2, 1))
    with pytest.raises(ValueError, match=r"rank >= 3 \(batch \+ event of rank 2\)"):
        layers.RealDFT().forward_and_log_det(np.zeros((4, 8), np.float32))
    with pytest.raises(ValueError, match="static T >= 2"):
        layers.RealDFT().forward_and_log_det(np.zeros((4, 1, 2), np.float32))
    with pytest.raises(ValueError, match=r"T >= 3 .* got input shape \(4, 2, 1\)"):
        layers.SpectralFilterCoupling().forward_and_log_det(np.zeros((4, 2, 1), np.float32))
    with pytest.raises(ValueError, match="norm must be one of"):
        layers.RealDFT(norm="unitary")


def test_models_save_and_load_with_their_options(tmp_path):
    """``.keras`` round trip of both new models: same options, same log-densities (weights
    perturbed, so the check is not at the identity)."""
    import keras

    from tfinv.models import FullyConnectedFlow

    x = np.random.default_rng(2).standard_normal((4, 7, 2)).astype(np.float32)
    fourier = FourierFlow((7, 2), num_couplings=2, hidden_units=4, log_filter_bound=None, norm="backward")
    dense = FullyConnectedFlow(5, num_layers=2, gradient="relative", training_log_det="omit", seed=3)
    for model, data in ((fourier, x), (dense, x[:, :5, 0])):
        perturb_weights(model, 0.2, seed=5)
        path = str(tmp_path / f"{model.name}.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded) is type(model)
        assert {k: v for k, v in loaded.get_config().items() if k != "name"} == {
            k: v for k, v in model.get_config().items() if k != "name"}
        np.testing.assert_array_equal(loaded.log_prob(data).numpy(), model.log_prob(data).numpy())


def test_conditional_coupling_filters_with_the_context_and_the_flow_needs_it():
    """The conditional coupling's filter and shift are the MLP of ``[flatten(X_a), c]`` (checked
    by hand on perturbed weights); the model's density and samples depend on the context, and a
    missing or misshapen context is named."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 7, 2)).astype(np.float32)
    c = rng.standard_normal((3, 3)).astype(np.float32)
    coupling = layers.SpectralFilterCoupling(parity=0, hidden_units=6, log_filter_bound=2.0, context_shape=(3,))
    coupling.build(x.shape)
    perturb_weights(coupling, 0.3, seed=1)
    y, log_det = coupling.forward_and_log_det(x, c)
    real = 4  # T // 2 + 1 real parts of T = 7 condition the 3 imaginary parts
    out = coupling.conditioner(np.concatenate([x[:, :real].reshape(3, -1), c], axis=-1)).numpy().reshape(3, 3, 2, 2)
    log_filter = 2.0 * np.tanh(out[..., 0] / 2.0)
    np.testing.assert_allclose(y.numpy()[:, :real], x[:, :real], rtol=0, atol=0)
    np.testing.assert_allclose(y.numpy()[:, real:], x[:, real:] * np.exp(log_filter) + out[..., 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_det.numpy(), log_filter.sum(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(coupling.inverse_and_log_det(y, c)[0].numpy(), x, rtol=1e-5, atol=1e-5)

    flow = FourierFlow((7, 2), num_couplings=2, hidden_units=4, context_shape=(3,)).initialize(x, c)
    perturb_weights(flow, 0.2, seed=2)
    assert flow.is_conditional
    assert np.all(np.abs(flow.log_prob(x, c).numpy() - flow.log_prob(x, c[::-1]).numpy())[[0, 2]] > 1e-4)
    samples = flow.sample(3, seed=5, context=c)
    assert samples.shape == (3, 7, 2)
    np.testing.assert_array_equal(flow.sample(3, seed=5, context=c).numpy(), samples.numpy())
    with pytest.raises(ValueError, match=r"is conditional: pass context of shape \(batch, 3\)"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match=r"context must have shape \(batch, 3\), got \(3, 2\)"):
        flow.log_prob(x, c[:, :2])
    with pytest.raises(ValueError, match=r"with a context needs input \(batch, T, channels\)"):
        layers.SpectralFilterCoupling(context_shape=(3,)).build((2, 4, 7, 2))
