"""Relative-gradient training of fully connected flows (Gresele et al., arXiv:2006.15090).

Exact checks in float64 on a tiny flow (D = 3, two dense layers): the ordinary gradient equals
autodiff through ``tf.linalg.slogdet`` (an independent reference), the relative gradient equals
the ordinary one times ``W^T W`` (tolerance 1e-10 relative), and one ``model.fit`` step with SGD
moves every ``W`` by exactly ``-lr`` times the relative gradient.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinv.layers import InvertibleDense
from tfinv.models import FullyConnectedFlow
from tfinv.ops import activations
from tfinv.testing.contract import perturb_weights, relative_error

TOL = 1e-10


def _flow(**kwargs):
    flow = FullyConnectedFlow(3, num_layers=2, negative_slope=0.3, seed=4, dtype="float64", **kwargs)
    perturb_weights(flow, 0.3, seed=1)  # non-identity W and b
    return flow


def _x():
    # float32-representable values: fit's data adapter may round inputs to float32
    return tf.constant(np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32).astype(np.float64))


def _loss_and_grads(flow, x, training):
    with tf.GradientTape() as tape:
        z, log_det = flow(x, training=training)
        loss = -tf.reduce_mean(flow._base_log_prob(z, log_det))
    return loss, tape.gradient(loss, flow.trainable_variables)


def _reference_grads(flow, x):
    """The true gradient by autodiff of the explicit formula, with log|det W| from slogdet."""
    (w1, b1), (w2, b2) = [(d.kernel, d.bias) for d in flow.dense_layers]
    with tf.GradientTape() as tape:
        h = tf.matmul(x, w1, transpose_b=True) + b1
        a, log_slope = activations.smooth_leaky_relu_forward(h, 0.3)
        z = tf.matmul(a, w2, transpose_b=True) + b2
        log_det = tf.linalg.slogdet(w1)[1] + tf.linalg.slogdet(w2)[1] + tf.reduce_sum(log_slope, -1)
        log_p = -0.5 * tf.reduce_sum(z**2, -1) - 1.5 * np.log(2 * np.pi) + log_det
        loss = -tf.reduce_mean(log_p)
    return loss, dict(zip(["w1", "b1", "w2", "b2"], tape.gradient(loss, [w1, b1, w2, b2])))


def _by_name(flow, grads):
    names = {}
    for variable, grad in zip(flow.trainable_variables, grads):
        layer = "1" if "dense_0" in variable.path else "2"
        names[("w" if "kernel" in variable.path else "b") + layer] = grad
    return names


def test_relative_gradient_is_ordinary_gradient_times_wtw():
    flow, x = _flow(), _x()
    loss_ref, reference = _reference_grads(flow, x)
    loss, ordinary = _loss_and_grads(flow, x, training=False)  # outside training: the true gradient
    relative_loss, relative = _loss_and_grads(flow, x, training=True)
    ordinary, relative = _by_name(flow, ordinary), _by_name(flow, relative)
    assert abs(float(loss) - float(loss_ref)) <= TOL * abs(float(loss_ref))
    assert float(relative_loss) == pytest.approx(float(loss), rel=TOL)
    for name in reference:
        assert relative_error(ordinary[name].numpy()[None], reference[name].numpy()[None]) <= TOL, name
    for layer, name in zip(flow.dense_layers, ["1", "2"]):
        w = layer.kernel.numpy()
        expected = ordinary["w" + name].numpy() @ w.T @ w
        assert relative_error(relative["w" + name].numpy()[None], expected[None]) <= TOL
        assert relative_error(relative["w" + name].numpy()[None], ordinary["w" + name].numpy()[None]) > 1e-2
        # biases keep their ordinary gradient
        np.testing.assert_allclose(relative["b" + name].numpy(), ordinary["b" + name].numpy(), rtol=TOL)


def test_log_det_gradient_is_w_inverse_transpose_or_w():
    w = tf.constant(np.random.default_rng(3).standard_normal((4, 4)))
    from tfinv.ops import relative_gradient

    for gradient, expected in (("ordinary", np.linalg.inv(w.numpy()).T), ("relative", w.numpy())):
        for value in (True, False):
            with tf.GradientTape() as tape:
                tape.watch(w)
                log_det = relative_gradient.log_abs_det(w, gradient, value=value)
            want = np.linalg.slogdet(w.numpy())[1] if value else 0.0
            assert float(log_det) == pytest.approx(want, abs=1e-12)
            np.testing.assert_allclose(tape.gradient(log_det, w).numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("training_log_det", ["exact", "omit"])
def test_fit_step_applies_the_relative_gradient(training_log_det):
    flow, x = _flow(training_log_det=training_log_det), _x()
    _, grads = _loss_and_grads(flow, x, training=True)
    exact_loss = float(_loss_and_grads(flow, x, training=False)[0])
    log_dets = sum(np.linalg.slogdet(d.kernel.numpy())[1] for d in flow.dense_layers)
    before = [v.numpy() for v in flow.trainable_variables]
    lr = 0.0625  # exact in the optimizer's float32 learning-rate variable
    flow.compile(keras.optimizers.SGD(lr))
    history = flow.fit(x, batch_size=6, epochs=1, shuffle=False, verbose=0)
    for variable, start, grad in zip(flow.trainable_variables, before, grads):
        expected = start - lr * grad.numpy()
        assert relative_error(variable.numpy()[None], expected[None]) <= TOL, variable.path
    # "omit" reports the NLL plus the omitted sum log|det W| (the gradient is the same)
    reported = exact_loss + (log_dets if training_log_det == "omit" else 0.0)
    assert abs(log_dets) > 0.1  # the two reports differ by far more than the tolerance
    # fit reports the loss through a float32 metric: 1e-6 relative
    assert history.history["loss"][0] == pytest.approx(reported, rel=1e-6)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="gradient must be one of"):
        InvertibleDense(gradient="natural")
    with pytest.raises(ValueError, match="training_log_det must be one of"):
        InvertibleDense(training_log_det="approximate")
    with pytest.raises(ValueError, match="input_dim >= 1"):
        FullyConnectedFlow(0)
