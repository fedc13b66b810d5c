"""Export a `tfinv.FlowModel` as a TF Serving SavedModel.

`to_saved_model` writes TF Serving's layout ``<base_dir>/<name>/<version>/`` holding one SavedModel
whose signatures are the deployment contract of `tfinv.export.signatures` (``forward``,
``inverse``, ``sample``, ``log_prob``, ``serving_default``; names, dtypes and shapes from there,
every batch dimension dynamic, ``-1``).

``sample`` draws ``eps = stateless_normal([n, *noise_shape], seed=[seed, 0])``, maps it through the
base distribution (``z = temperature * eps`` for the standard normal) and returns
``x = inverse(z)``: for a given seed it is reproducible and equal to
``model.sample(n, temperature, seed)``. A conditional model's signatures take ``context`` as
well (``sample``: one row per sample). It refuses (``InvalidArgumentError``) ``n < 1`` and a
temperature that is not finite and positive (1e39 sent as JSON becomes float32 ``inf``).

The graph holds only TensorFlow ops and the weights: loading it needs neither tfinv nor
TensorFlow Probability (nor Keras); ``tf.saved_model.load``, ``saved_model_cli run`` and
``tensorflow_model_server`` run it.

Implementation notes (observed with TF 2.21 / Keras 3.15):

* The archive is written by `keras.export.ExportArchive` with ``track(model)``. A plain
  ``tf.Module`` export loads with ``tf.saved_model.load`` but fails session-style loading
  (``saved_model_cli run``, TF Serving) with ``Could not find variable ...`` unless the variables
  are tracked.
* Scalar inputs need nothing special: an endpoint whose ``input_signature`` is
  ``[TensorSpec([], tf.int32, name="n"), ...]`` gives SignatureDef inputs of shape ``()``, named
  after the specs. Returning a dict from an endpoint names the SignatureDef outputs (a tuple
  would give ``output_0``, ``output_1``).
* The version directory is written in a hidden staging folder (`tfinv.export.files.Staging`,
  ``.export.tmp-<hex>``, which TF Serving ignores, as it only loads all-digit directory names)
  and renamed into place, so a server polling ``<base_dir>/<name>`` never sees a half-written
  version; folders get umask permissions (not ``mkdtemp``'s 0700).
"""

from __future__ import annotations

import os
import pathlib
from typing import Callable

import keras
import tensorflow as tf

from tfinv.core import FlowModel
from tfinv.export.files import Staging, check_destination
from tfinv.export.signatures import SIGNATURE_NAMES, check_model_name, check_version, signatures

__all__ = ["to_saved_model", "SIGNATURES"]

#: The signature keys every exported SavedModel has (`tfinv.export.signatures.SIGNATURE_NAMES`).
SIGNATURES: tuple[str, ...] = SIGNATURE_NAMES


def _check_arguments(model, name, version, max_batch) -> None:
    """Raises a clear TypeError/ValueError for a bad argument (before anything is written)."""
    if not isinstance(model, FlowModel):
        raise TypeError(
            f"to_saved_model needs a tfinv FlowModel (e.g. tfinv.models.Glow), got {type(model).__name__}"
        )
    parts = [model, getattr(model, "base", None), getattr(model, "flow", None)]
    if not all(part is None or part.built for part in parts):
        raise ValueError(
            f"{type(model).__name__} '{model.name}' is not built; build it (model.build()) or run it "
            "on a batch before exporting"
        )
    check_model_name(name)
    check_version(version)
    if max_batch is not None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int):
            raise TypeError(f"max_batch must be None or a positive int, got {max_batch!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be None or a positive int, got {max_batch}")


def _endpoints(model: FlowModel, max_batch: int | None) -> dict[str, tuple[Callable, list[tf.TensorSpec]]]:
    """The signature functions and their input specs (float32 in and out, cast to the model's
    compute dtype inside)."""
    dtype = tf.as_dtype(model.compute_dtype)
    data_shape = tuple(model.data_shape)
    latent_shape = tuple(model.latent_shape)

    def batch_guard(batch, what):
        if max_batch is None:
            return []
        return [tf.debugging.assert_less_equal(
            tf.cast(batch, tf.int32), tf.constant(max_batch, tf.int32),
            message=f"{what} exceeds the exported max_batch={max_batch}")]

    def f32(t, shape):
        return tf.ensure_shape(tf.cast(t, tf.float32), shape)

    context_shape = getattr(model, "context_shape", None)
    base = getattr(model, "base", None)
    noise_shape = tuple(base.noise_shape) if base is not None else latent_shape

    def ctx(context):
        # TF does not check a signature's input shape at call time: a wrong-shaped y would pass
        # through a conditioning network that resizes it; refuse it (InvalidArgumentError).
        return None if context is None else tf.cast(tf.ensure_shape(context, (None,) + tuple(context_shape)), dtype)

    def forward(x, context=None):
        with tf.control_dependencies(batch_guard(tf.shape(x)[0], "batch size")):
            z, log_det = model.forward(tf.cast(x, dtype), ctx(context)) if context is not None \
                else model.forward(tf.cast(x, dtype))
        return {"z": f32(z, (None,) + latent_shape), "log_det": f32(log_det, (None,))}

    def inverse(z, context=None):
        with tf.control_dependencies(batch_guard(tf.shape(z)[0], "batch size")):
            x, log_det = model.inverse_and_log_det(tf.cast(z, dtype), ctx(context)) if context is not None \
                else model.inverse_and_log_det(tf.cast(z, dtype))
        return {"x": f32(x, (None,) + data_shape), "log_det": f32(log_det, (None,))}

    def log_prob(x, context=None):
        with tf.control_dependencies(batch_guard(tf.shape(x)[0], "batch size")):
            lp = model.log_prob(tf.cast(x, dtype), ctx(context)) if context is not None \
                else model.log_prob(tf.cast(x, dtype))
        return {"log_prob": f32(lp, (None,))}

    def sample(n, seed, temperature, context=None):
        checks = [
            tf.debugging.assert_positive(n, message="sample needs n >= 1"),
            tf.debugging.assert_all_finite(temperature, message="sample needs a finite temperature "
                                           "(a value beyond float32 range, e.g. 1e39, is inf)"),
            tf.debugging.assert_positive(temperature, message="sample needs temperature > 0"),
        ] + batch_guard(n, "sample size n")
        if context is not None:
            checks.append(tf.debugging.assert_equal(tf.shape(context)[0], n,
                                                    message="sample needs one context row per sample (n rows)"))
        with tf.control_dependencies(checks):
            shape = tf.concat([tf.reshape(n, [1]), tf.constant(noise_shape, tf.int32)], axis=0)
            # Same draw as FlowModel.sample(n, temperature, seed): stateless, seed=[seed, 0], then
            # the base's map from standard noise to latents (T * eps for the standard normal).
            eps = tf.random.stateless_normal(shape, seed=tf.stack([seed, tf.zeros_like(seed)]), dtype=dtype)
            latent = eps * tf.cast(temperature, dtype) if base is None \
                else base.sample_latent(eps, tf.cast(temperature, dtype))
            z = tf.debugging.assert_all_finite(
                latent, "sample: temperature * noise overflows float32 (temperature too large)")
            x = model.inverse(z, ctx(context)) if context is not None else model.inverse(z)
        return {"x": f32(x, (None,) + data_shape), "z": f32(z, (None,) + latent_shape)}

    functions = {"forward": forward, "inverse": inverse, "sample": sample, "log_prob": log_prob,
                 "serving_default": log_prob}
    return {key: (functions[key], [tf.TensorSpec([None if d == -1 else d for d in spec.shape], spec.dtype,
                                                 name=spec.name) for spec in sig.inputs])
            for key, sig in signatures(data_shape, latent_shape, context_shape).items()}


def write_archive(model: FlowModel, directory: pathlib.Path, max_batch: int | None = None) -> None:
    """Writes the SavedModel with all `SIGNATURES` into ``directory`` (created; must not hold files)."""
    os.makedirs(directory, exist_ok=True)
    archive = keras.export.ExportArchive()
    # Tracking the model makes its variables part of the saved object graph, so that
    # session-style loaders (saved_model_cli run, TF Serving) find them.
    archive.track(model)
    for key, (fn, spec) in _endpoints(model, max_batch).items():
        archive.add_endpoint(key, fn, input_signature=spec)
    archive.write_out(str(directory), verbose=False)


def to_saved_model(
    model: FlowModel,
    base_dir: str | os.PathLike,
    name: str,
    version: int = 1,
    overwrite: bool = False,
    max_batch: int | None = None,
) -> pathlib.Path:
    """Exports ``model`` as a TF Serving SavedModel in ``<base_dir>/<name>/<version>/``.

    Signatures (batch dimension dynamic): ``forward`` (``x`` -> ``z``, ``log_det``), ``inverse``
    (``z`` -> ``x``, ``log_det``), ``sample`` (int32 scalars ``n``, ``seed`` and float32 scalar
    ``temperature`` -> ``x``, ``z``; reproducible for a seed and equal to
    ``model.sample(n, temperature, seed)``), ``log_prob`` (``x`` -> ``log_prob``) and
    ``serving_default`` (= ``log_prob``). See the module docstring for shapes. The SavedModel runs
    without tfinv, TensorFlow Probability or Keras installed.

    The export is atomic: it is written into a hidden temporary sibling directory and renamed to
    ``<version>``; on failure nothing is left behind (and with ``overwrite=True`` the previous
    version stays in place). Nothing else is written beside the SavedModel.

    Args:
        model: a built `tfinv.FlowModel` (e.g. `tfinv.models.Glow`).
        base_dir: the model base directory of TF Serving (``--model_base_path``'s parent);
            created if missing.
        name: the model's name, a single directory name (TF Serving's ``model_name``).
        version: positive integer version directory.
        overwrite: replace an existing ``<base_dir>/<name>/<version>``; otherwise refuse.
        max_batch: if given, every signature rejects (``InvalidArgumentError`` at run time) a
            batch, or a sample count ``n``, larger than this; the signatures' batch dimension
            stays dynamic (``-1``).

    Returns:
        The version directory ``<base_dir>/<name>/<version>``.

    Raises:
        TypeError: ``model`` is not a `FlowModel`, or ``version``/``max_batch`` is not an int.
        ValueError: the model is not built, ``version``/``max_batch`` < 1, or ``name`` is not a
            plain directory name.
        FileExistsError: the version directory exists and ``overwrite`` is false.
    """
    _check_arguments(model, name, version, max_batch)
    parent = pathlib.Path(base_dir) / name
    check_destination(parent, [f"{version}/"], overwrite)
    with Staging(parent) as staging:
        directory = staging.path(str(version))
        os.mkdir(directory)
        write_archive(model, directory, max_batch)
        staging.commit(overwrite)
    return parent / str(version)
