"""Computed tomography: ``y = R x + sigma * eps`` with ``R`` scikit-image's Radon transform at a
few angles (sparse-view / limited-angle), its filtered back-projection, and phantoms.

``R`` is linear, so it is built once as a real matrix (column ``i`` = ``skimage.transform.radon``
of the ``i``-th unit image) and applied by a matrix product; the filtered back-projection
(``skimage.transform.iradon``, ramp filter) is linear in the sinogram and built the same way,
as the fixed Keras layer `FilteredBackProjection` a conditioning network can start from.
scikit-image is an optional dependency (``pip install 'tfinv[inverse]'``), imported only here.
"""

from __future__ import annotations

import functools
import warnings
from typing import Sequence

import keras
import numpy as np

from tfinv.inverse_problems import _checks


def _skimage_transform():
    try:
        from skimage import transform
    except ImportError as err:  # the optional dependency
        raise ImportError("tfinv.inverse_problems.Tomography needs scikit-image: pip install 'tfinv[inverse]' "
                          f"({err})") from err
    return transform


def _angles(angles, arc: float) -> np.ndarray:
    if isinstance(angles, (int, np.integer)) and not isinstance(angles, bool):
        if angles < 1:
            raise ValueError(f"Tomography needs angles >= 1 (number of views), got {angles}")
        if not (np.isfinite(arc) and 0 < arc <= 180):
            raise ValueError(f"Tomography needs an arc in (0, 180] degrees, got {arc}")
        return np.arange(int(angles), dtype=np.float64) * (float(arc) / int(angles))
    theta = np.asarray(angles, dtype=np.float64) if not isinstance(angles, bool) else np.asarray([])
    if theta.ndim != 1 or len(theta) == 0 or not np.all(np.isfinite(theta)):
        raise ValueError(f"Tomography angles must be a number of views or a 1-D list of finite degrees, got {angles!r}")
    return theta


@functools.lru_cache(maxsize=8)
def _matrices(size: int, theta: tuple[float, ...], circle: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(R, B)``: the Radon transform ``(D * A, size**2)`` and the ramp-filtered back-projection
    ``(size**2, D * A)`` (row-major sinogram ``(D, A)``, row-major image), float64."""
    transform = _skimage_transform()
    angles = np.asarray(theta)
    unit = np.zeros((size, size))
    columns = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # radon warns about unit images outside the circle (circle=True)
        for i in range(size * size):
            unit.flat[i] = 1.0
            columns.append(transform.radon(unit, angles, circle=circle).ravel())
            unit.flat[i] = 0.0
        radon = np.stack(columns, axis=1)
        detectors = radon.shape[0] // len(angles)
        sino = np.zeros((detectors, len(angles)))
        columns = []
        for j in range(detectors * len(angles)):
            sino.flat[j] = 1.0
            columns.append(transform.iradon(sino, angles, output_size=size, filter_name="ramp",
                                            circle=circle).ravel())
            sino.flat[j] = 0.0
    return radon, np.stack(columns, axis=1)


#: Photon counts below this are raised to it before the log (LoDoPaB-CT's rule: a detector bin
#: that counted no photon would give ``y = inf``).
MIN_COUNT = 0.1


class Tomography:
    """``y = R x + sigma * eps``: the sinogram of ``x`` at ``A`` projection angles, then noise.

    Low-dose (``photons=I0``): Poisson noise of a photon-counting detector instead of Gaussian
    noise (Beer-Lambert): ``counts ~ Poisson(I0 exp(-mu R x))`` per detector bin, and the
    observation is the post-log sinogram ``y = -log(max(counts, 0.1) / I0) / mu`` (on the scale
    of ``R x``; counts of 0 are raised to 0.1, as in LoDoPaB-CT, Leuschner et al.,
    arXiv:1910.01113). Its noise grows where few photons get through: ``std(y) ~
    1 / (mu sqrt(I0 exp(-mu R x)))``.

    ``R`` is ``skimage.transform.radon`` (parallel beam; ``circle=False``: the image is padded
    to its diagonal, ``D = ceil(sqrt(2) * H)`` detectors; ``circle=True``: ``x`` is assumed zero
    outside the inscribed circle, ``D = H``) held as a matrix. Sparse view: few angles over 180
    degrees; limited angle: ``arc < 180``. `fbp` is ``skimage.transform.iradon`` (ramp filter)
    of the sinogram, as a matrix too.
    Shapes: ``(N, H, H, 1) -> (N, D, A, 1)``; square single-channel images.

    Args:
        noise_std: ``sigma > 0`` (in the units of the ray sums: a pixel of value 1 contributes
            about 1 per unit of path length); ``None``: 0.1, or no Gaussian noise with ``photons``.
        photons: ``I0 > 0``, the mean photon count per detector bin without an object (e.g. 4096
            as LoDoPaB-CT, fewer for lower dose); ``None``: Gaussian noise.
        attenuation: ``mu > 0`` with ``photons``: attenuation per unit of ray sum; ``None``:
            ``2 / H`` for ``H x H`` images (a ray through ``H`` pixels of value 1 keeps
            ``exp(-2) = 13.5 %`` of its photons).
        angles: number of views, evenly spaced over ``[0, arc)`` degrees, or the list of angles.
        arc: angular range in degrees for a number of views (180: sparse view; less: limited angle).
        circle: see above.
    """

    def __init__(self, noise_std: float | None = None, angles: int | Sequence[float] = 8, arc: float = 180.0,
                 circle: bool = False, photons: float | None = None, attenuation: float | None = None):
        if photons is None:
            if attenuation is not None:
                raise ValueError(f"Tomography attenuation={attenuation!r} applies to Poisson noise: pass photons "
                                 "(I0 > 0) too, or drop attenuation")
            self.noise_std = _checks.noise_level(0.1 if noise_std is None else noise_std)
            self.photons = None
        else:
            if noise_std is not None:
                raise ValueError(f"Tomography takes either noise_std (Gaussian noise) or photons (Poisson noise), "
                                 f"got noise_std={noise_std!r} and photons={photons!r}")
            self.noise_std = None
            self.photons = _checks.noise_level(photons, "photons")
        self.attenuation = None if attenuation is None else _checks.noise_level(attenuation, "attenuation")
        self.theta = _angles(angles, arc)
        self.circle = bool(circle)

    def attenuation_for(self, size: int) -> float:
        """``mu`` for ``size x size`` images (the given one, else ``2 / size``)."""
        return self.attenuation if self.attenuation is not None else 2.0 / int(size)

    def _check_image_shape(self, image_shape) -> int:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 1:
            raise ValueError(f"Tomography needs square single-channel images (H, H, 1), got {shape}")
        return shape[0]

    def matrices(self, image_shape) -> tuple[np.ndarray, np.ndarray]:
        """``(R, B)`` for images of ``image_shape``: Radon ``(D*A, H*H)`` and FBP ``(H*H, D*A)``
        (float64, built once per size and cached)."""
        size = self._check_image_shape(image_shape)
        return _matrices(size, tuple(float(t) for t in self.theta), self.circle)

    def observation_shape(self, image_shape) -> tuple[int, int, int]:
        size = self._check_image_shape(image_shape)
        detectors = size if self.circle else int(np.ceil(np.sqrt(2) * size))
        return detectors, len(self.theta), 1

    def apply(self, x) -> np.ndarray:
        """The noiseless sinogram ``R x``, shape ``(N, D, A, 1)``."""
        x = _checks.images(x, "Tomography")
        radon, _ = self.matrices(x.shape[1:])
        flat = x.reshape(len(x), -1).astype(np.float64) @ radon.T
        return flat.reshape((len(x),) + self.observation_shape(x.shape[1:])).astype(np.float32)

    def __call__(self, x, seed: int | None = None) -> np.ndarray:
        """A noisy sinogram of ``x`` (Gaussian, or Poisson photon counts with ``photons``)."""
        clean = self.apply(x)
        rng = _checks.rng(seed)
        if self.photons is None:
            return (clean + self.noise_std * rng.standard_normal(clean.shape)).astype(np.float32)
        mu = self.attenuation_for(np.asarray(x).shape[1])
        counts = rng.poisson(self.photons * np.exp(-mu * clean.astype(np.float64)))
        return (-np.log(np.maximum(counts, MIN_COUNT) / self.photons) / mu).astype(np.float32)

    def pairs(self, x, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` training pairs from an image set ``x`` of shape ``(N, H, H, 1)``."""
        x = _checks.images(x, "Tomography")
        return x, self(x, seed)

    def fbp(self, y, image_shape) -> np.ndarray:
        """Filtered back-projection of sinograms ``y`` ``(N, D, A, 1)`` to images ``(N, H, H, 1)``."""
        expected = self.observation_shape(image_shape)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 4 or y.shape[1:] != expected:
            raise ValueError(f"Tomography.fbp needs sinograms of shape (N,) + {expected}, got {y.shape}")
        _, back = self.matrices(image_shape)
        return (y.reshape(len(y), -1) @ back.T).reshape((len(y),) + tuple(int(s) for s in image_shape)) \
            .astype(np.float32)

    def fbp_layer(self, image_shape) -> "FilteredBackProjection":
        """`FilteredBackProjection` holding this operator's FBP matrix (for a conditioning network)."""
        _, back = self.matrices(image_shape)
        return FilteredBackProjection(self.observation_shape(image_shape), tuple(int(s) for s in image_shape),
                                      matrix=back)

    def conditioning_network(self, image_shape, features: int = 32, hidden: int = 64) -> keras.Model:
        """A cINN conditioning network starting from the FBP: sinogram ``y`` ->
        `FilteredBackProjection` -> ``Conv3x3(hidden) -> ReLU -> Conv3x3(hidden) -> ReLU ->
        Conv3x3(features)``: features ``(H, H, features)`` (pass it to `ConditionalGlow`)."""
        inputs = keras.Input(self.observation_shape(image_shape), name="sinogram")
        h = self.fbp_layer(image_shape)(inputs)
        h = keras.layers.Conv2D(int(hidden), 3, padding="same", activation="relu", name="conv_0")(h)
        h = keras.layers.Conv2D(int(hidden), 3, padding="same", activation="relu", name="conv_1")(h)
        out = keras.layers.Conv2D(int(features), 3, padding="same", name="features")(h)
        return keras.Model(inputs, out, name="fbp_conditioning_network")


@keras.saving.register_keras_serializable(package="tfinv")
class FilteredBackProjection(keras.layers.Layer):
    """A fixed linear map from sinograms to images: ``image = B vec(y)``, ``B`` a non-trainable
    weight (e.g. `Tomography.fbp_layer`: scikit-image's ramp-filtered back-projection).

    Shapes: ``(N,) + sinogram_shape -> (N,) + image_shape``.

    Args:
        sinogram_shape: ``(D, A, 1)``.
        image_shape: ``(H, W, 1)``.
        matrix: ``B`` of shape ``(H*W, D*A)``; ``None`` (when loading a saved model): zeros,
            replaced by the saved weight.
    """

    def __init__(self, sinogram_shape: Sequence[int], image_shape: Sequence[int], matrix=None, **kwargs):
        super().__init__(**kwargs)
        self.sinogram_shape = tuple(int(s) for s in sinogram_shape)
        self.image_shape = tuple(int(s) for s in image_shape)
        rows, cols = int(np.prod(self.image_shape)), int(np.prod(self.sinogram_shape))
        if matrix is not None:
            matrix = np.asarray(matrix, dtype=np.float32)
            if matrix.shape != (rows, cols):
                raise ValueError(f"FilteredBackProjection matrix must have shape {(rows, cols)}, got {matrix.shape}")
        self.matrix = self.add_weight(
            shape=(rows, cols), trainable=False, name="matrix",
            initializer=keras.initializers.Constant(matrix) if matrix is not None else "zeros")

    def call(self, y):
        flat = keras.ops.reshape(keras.ops.cast(y, self.compute_dtype), (-1, int(np.prod(self.sinogram_shape))))
        image = keras.ops.matmul(flat, keras.ops.transpose(keras.ops.cast(self.matrix, self.compute_dtype)))
        return keras.ops.reshape(image, (-1,) + self.image_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.image_shape

    def get_config(self):
        return {**super().get_config(), "sinogram_shape": list(self.sinogram_shape),
                "image_shape": list(self.image_shape)}


def random_ellipses(n: int, size: int = 64, max_ellipses: int = 8, seed: int | None = None) -> np.ndarray:
    """``n`` random-ellipse phantoms ``(n, size, size, 1)`` in ``[0, 1]`` (float32).

    Each phantom sums ``U{2..max_ellipses}`` ellipses (centres within radius 0.5 of the image
    centre in units of the half-width, semi-axes ``U(0.05, 0.4)``, rotation ``U(0, pi)``,
    values ``U(0.1, 0.6)``, a random third of them subtracted), clipped to ``[0, 1]`` and zero
    outside the inscribed circle. After the ellipse data sets of Denker et al. (J. Imaging 2021)
    and ODL's ``ellipsoid_phantom``; the distributions are ours.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"random_ellipses needs n >= 1 as an int, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"random_ellipses needs size >= 2 as an int, got {size!r}")
    if isinstance(max_ellipses, bool) or not isinstance(max_ellipses, (int, np.integer)) or max_ellipses < 2:
        raise ValueError(f"random_ellipses needs max_ellipses >= 2 as an int, got {max_ellipses!r}")
    rng = _checks.rng(seed)
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    inside = (xx**2 + yy**2) <= 1.0
    out = np.zeros((int(n), size, size), np.float64)
    for k in range(int(n)):
        for _ in range(rng.integers(2, int(max_ellipses) + 1)):
            radius, phase = 0.5 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            cx, cy = radius * np.cos(phase), radius * np.sin(phase)
            a, b = rng.uniform(0.05, 0.4, 2)
            angle = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
            v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
            sign = -1.0 if rng.uniform() < 1 / 3 else 1.0
            out[k] += sign * rng.uniform(0.1, 0.6) * ((u / a) ** 2 + (v / b) ** 2 <= 1.0)
    return (np.clip(out, 0.0, 1.0) * inside)[..., None].astype(np.float32)


def shepp_logan(size: int = 64) -> np.ndarray:
    """scikit-image's Shepp-Logan phantom resized (anti-aliased) to ``(1, size, size, 1)`` in ``[0, 1]``."""
    from skimage import data  # noqa: F401  (scikit-image checked by _skimage_transform)

    transform = _skimage_transform()
    image = transform.resize(data.shepp_logan_phantom(), (int(size), int(size)), anti_aliasing=True)
    return np.clip(image, 0.0, 1.0)[None, ..., None].astype(np.float32)


__all__ = ["MIN_COUNT", "FilteredBackProjection", "Tomography", "random_ellipses", "shepp_logan"]
