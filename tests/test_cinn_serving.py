"""A conditional INN's posterior through export and serving (issue 15): a tiny ConditionalGlow
for super-resolution (observation ``y`` an image, its conditioning network a CNN) exported to
ONNX and a SavedModel; the SavedModel's ``sample`` signature and the ONNX server (through
`tfinv.serving.Client`) return, for a posted ``y`` and seed, ``model.sample(n, T, seed, context=y)``."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinv import inverse_problems as ip
from tfinv.export import export_flow
from tfinv.models import ConditionalGlow
from tfinv.serving import Client, create_app
from tfinv.testing.contract import perturb_weights, relative_error

N, SEED, TEMPERATURE = 6, 11, 0.8
SAVED_MODEL_TOL = 1e-5  # the same TF graph: float32 reordering only
ONNX_TOL = 1e-4  # ONNX-vs-TF parity (relative), as the export's own check


@pytest.fixture(scope="module")
def cinn():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = ip.SuperResolution(0.05).pairs(rng.uniform(0.0, 1.0, (16, 8, 8, 1)).astype(np.float32), seed=1)
    model = ConditionalGlow((8, 8, 1), observation_shape=(4, 4, 1), levels=1, steps_per_level=1,
                            hidden_channels=4, condition_features=4, name="superres")
    model.initialize(x, y)
    perturb_weights(model, 0.05)
    return model, y


@pytest.fixture(scope="module")
def exported(cinn, tmp_path_factory):
    model, _ = cinn
    out = tmp_path_factory.mktemp("cinn_export")
    manifest = export_flow(model, out, saved_model=True)
    return out, manifest


def _posterior_context(y, index=2):
    """``N`` rows of the one observation ``y[index]``: ``N`` posterior samples for it."""
    return np.repeat(y[index:index + 1], N, axis=0)


def test_saved_model_serves_posterior_samples_equal_to_model_sample(cinn, exported):
    model, y = cinn
    out, manifest = exported
    assert manifest["context_shape"] == [4, 4, 1]
    loaded = tf.saved_model.load(str(out / manifest["saved_model"]))
    context = _posterior_context(y)
    got = loaded.signatures["sample"](n=tf.constant(N), seed=tf.constant(SEED),
                                      temperature=tf.constant(TEMPERATURE), context=tf.constant(context))["x"]
    expected = model.sample(N, TEMPERATURE, SEED, context=context)
    assert relative_error(got, expected) <= SAVED_MODEL_TOL
    # Posterior samples: they differ from one another and depend on y.
    assert float(tf.math.reduce_std(got, axis=0).numpy().mean()) > 1e-2
    other = loaded.signatures["sample"](n=tf.constant(N), seed=tf.constant(SEED), temperature=tf.constant(TEMPERATURE),
                                        context=tf.constant(_posterior_context(y, 5)))["x"]
    assert relative_error(other, got) > 1e-3
    # A y of the wrong shape is refused (TF alone would resize it inside the conditioning network).
    with pytest.raises(tf.errors.InvalidArgumentError, match="Shape of tensor"):
        loaded.signatures["sample"](n=tf.constant(N), seed=tf.constant(SEED), temperature=tf.constant(TEMPERATURE),
                                    context=tf.constant(np.zeros((N, 8, 8, 1), np.float32)))


def test_onnx_server_serves_posterior_samples_equal_to_model_sample(cinn, exported):
    from starlette.testclient import TestClient

    model, y = cinn
    out, _ = exported
    context = _posterior_context(y, 3)
    with TestClient(create_app(out)) as http:
        client = Client("http://testserver", model="superres")
        client.transport._http = http  # the in-process app behind the REST transport
        x = client.sample(N, seed=SEED, temperature=TEMPERATURE, context=context)
        assert relative_error(x, model.sample(N, TEMPERATURE, SEED, context=context)) <= ONNX_TOL
        assert np.array_equal(client.sample(N, seed=SEED, temperature=TEMPERATURE, context=context), x)
        # log p(x | y) of the served samples, as the TF model computes it.
        assert relative_error(client.log_prob(x, context=context), model.log_prob(x, context)) <= ONNX_TOL
        body = {"signature_name": "sample",
                "inputs": {"n": N, "seed": 0, "temperature": 1.0, "context": np.zeros((N, 8, 8, 1)).tolist()}}
        response = http.post("/v1/models/superres:predict", content=json.dumps(body))
        assert response.status_code == 400 and "[-1, 4, 4, 1]" in response.json()["error"], response.text


def _context_errors(http, model_name, context, extra=None):
    inputs = {"n": 2, "seed": 0, "temperature": 1.0, **(extra or {})}
    if context is not _MISSING:
        inputs["context"] = context
    response = http.post(f"/v1/models/{model_name}:predict",
                         content=json.dumps({"signature_name": "sample", "inputs": inputs}))
    return response.status_code, response.json().get("error", response.text)


_MISSING = object()


@pytest.mark.parametrize("context, message", [
    (_MISSING, r"signature 'sample' takes the inputs \['n', 'seed', 'temperature', 'context'\]; "
               r"missing \['context'\]"),
    (np.zeros((2, 4, 4)).tolist(), r"input 'context' of signature 'sample' must have shape \[-1, 4, 4, 1\] "
                                   r"\(-1: batch >= 1\), got \[2, 4, 4\]"),
    ([[["a"] * 1] * 4] * 4, "input 'context' of signature 'sample' must be numbers of dtype DT_FLOAT, got strings"),
    (True, "input 'context' of signature 'sample' must be numbers of dtype DT_FLOAT, got booleans"),
])
def test_onnx_server_refuses_a_bad_observation_with_a_400_naming_it(exported, context, message):
    from starlette.testclient import TestClient

    out, _ = exported
    with TestClient(create_app(out)) as http:
        status, error = _context_errors(http, "superres", context)
    assert status == 400 and __import__("re").search(message, error), (status, error)


def test_onnx_server_refuses_an_observation_for_an_unconditional_model(onnx_glow):
    from starlette.testclient import TestClient

    _, out = onnx_glow
    with TestClient(create_app(out)) as http:
        status, error = _context_errors(http, "digits", np.zeros((2, 4, 4, 1)).tolist())
    assert status == 400 and error == ("signature 'sample' takes the inputs ['n', 'seed', 'temperature']; "
                                       "unknown ['context']"), (status, error)
