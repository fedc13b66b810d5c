"""Export a `tfinv.FlowModel` as a TF Serving SavedModel.

`to_saved_model` writes TF Serving's layout ``<base_dir>/<name>/<version>/`` holding one SavedModel
with five signatures (every batch dimension dynamic, ``-1``):

==================== ====================================================== ======================
signature            inputs                                                 outputs
==================== ====================================================== ======================
``forward``          ``x`` float32 ``[-1, *data_shape]``                    ``z``, ``log_det``
``inverse``          ``z`` float32 ``[-1, *latent_shape]``                  ``x``, ``log_det``
``sample``           ``n`` int32 ``[]``, ``seed`` int32 ``[]``,              ``x``, ``z``
                     ``temperature`` float32 ``[]``
``log_prob``         ``x`` float32 ``[-1, *data_shape]``                    ``log_prob``
``serving_default``  same as ``log_prob``                                   ``log_prob``
==================== ====================================================== ======================

``log_det`` is ``log|det dz/dx|`` for ``forward`` and ``log|det dx/dz|`` for ``inverse`` (one value
per example). ``sample`` draws ``z = temperature * stateless_normal([n, *latent_shape],
seed=[seed, 0])`` and returns ``x = inverse(z)``: for a given seed it is reproducible and equal to
``model.sample(n, temperature, seed)``.

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
* The version directory is written under a hidden temporary sibling (``.<version>.tmp-<hex>``,
  which TF Serving ignores, as it only loads all-digit directory names) and renamed into place,
  so a server polling ``<base_dir>/<name>`` never sees a half-written version. The temporary
  directory is made with ``os.mkdir`` (umask permissions), not ``tempfile.mkdtemp``, whose mode
  0700 would survive the rename and hide the model from a server running as another user.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import uuid
from typing import Callable

import keras
import tensorflow as tf

from tfinv.core.flow_model import FlowModel

__all__ = ["to_saved_model", "SIGNATURES"]

#: The signature keys every exported SavedModel has.
SIGNATURES: tuple[str, ...] = ("forward", "inverse", "sample", "log_prob", "serving_default")


def _check_arguments(model, name, version, max_batch) -> None:
    """Raises a clear TypeError/ValueError for a bad argument (before anything is written)."""
    if not isinstance(model, FlowModel):
        raise TypeError(
            f"to_saved_model needs a tfinv FlowModel (e.g. tfinv.models.Glow), got {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"{type(model).__name__} '{model.name}' is not built; build it (model.build()) or run it "
            "on a batch before exporting"
        )
    if not isinstance(name, str) or not name or name in (".", "..") or name.startswith("."):
        raise ValueError(f"model name must be a non-empty directory name not starting with '.', got {name!r}")
    if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"model name must be a single directory name, without path separators, got {name!r}")
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"version must be a positive int, got {version!r} ({type(version).__name__})")
    if version < 1:
        raise ValueError(f"version must be a positive int, got {version}")
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

    def forward(x):
        with tf.control_dependencies(batch_guard(tf.shape(x)[0], "batch size")):
            z, log_det = model.forward(tf.cast(x, dtype))
        return {"z": f32(z, (None,) + latent_shape), "log_det": f32(log_det, (None,))}

    def inverse(z):
        with tf.control_dependencies(batch_guard(tf.shape(z)[0], "batch size")):
            x, log_det = model.inverse_and_log_det(tf.cast(z, dtype))
        return {"x": f32(x, (None,) + data_shape), "log_det": f32(log_det, (None,))}

    def log_prob(x):
        with tf.control_dependencies(batch_guard(tf.shape(x)[0], "batch size")):
            lp = model.log_prob(tf.cast(x, dtype))
        return {"log_prob": f32(lp, (None,))}

    def sample(n, seed, temperature):
        checks = [
            tf.debugging.assert_positive(n, message="sample needs n >= 1"),
            tf.debugging.assert_positive(temperature, message="sample needs temperature > 0"),
        ] + batch_guard(n, "sample size n")
        with tf.control_dependencies(checks):
            shape = tf.concat([tf.reshape(n, [1]), tf.constant(latent_shape, tf.int32)], axis=0)
            # Same draw as FlowModel.sample(n, temperature, seed): stateless, seed=[seed, 0].
            eps = tf.random.stateless_normal(shape, seed=tf.stack([seed, tf.zeros_like(seed)]), dtype=dtype)
            z = eps * tf.cast(temperature, dtype)
            x = model.inverse(z)
        return {"x": f32(x, (None,) + data_shape), "z": f32(z, (None,) + latent_shape)}

    x_spec = [tf.TensorSpec((None,) + data_shape, tf.float32, name="x")]
    return {
        "forward": (forward, x_spec),
        "inverse": (inverse, [tf.TensorSpec((None,) + latent_shape, tf.float32, name="z")]),
        "sample": (sample, [
            tf.TensorSpec([], tf.int32, name="n"),
            tf.TensorSpec([], tf.int32, name="seed"),
            tf.TensorSpec([], tf.float32, name="temperature"),
        ]),
        "log_prob": (log_prob, x_spec),
        "serving_default": (log_prob, x_spec),
    }


def _write_archive(model: FlowModel, directory: pathlib.Path, max_batch: int | None) -> None:
    """Writes the SavedModel with all `SIGNATURES` into the existing, empty ``directory``."""
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
    target = parent / str(version)
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(
            f"{target} already exists; pass overwrite=True to replace it, or export a new version"
        )

    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{version}.tmp-{uuid.uuid4().hex}"
    os.mkdir(tmp)
    try:
        _write_archive(model, tmp, max_batch)
        _move_into_place(tmp, target, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _move_into_place(tmp: pathlib.Path, target: pathlib.Path, overwrite: bool) -> None:
    """Renames ``tmp`` to ``target``; with ``overwrite`` the old target is moved aside first and
    restored if the rename fails."""
    old = None
    if os.path.lexists(target):
        if not overwrite:  # appeared while we were exporting
            raise FileExistsError(f"{target} appeared during the export; not replacing it (overwrite=False)")
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError as err:
        if old is not None:
            os.rename(old, target)
        if os.path.lexists(target):
            raise FileExistsError(f"{target} appeared during the export; not replacing it") from err
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
