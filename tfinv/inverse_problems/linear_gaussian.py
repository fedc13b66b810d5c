"""The linear Gaussian toy problem: ``x ~ N(0, I_d)``, ``y = A x + sigma * eps``; exact posterior."""

from __future__ import annotations

import numpy as np

from tfinv.inverse_problems import _checks


class LinearGaussian:
    """``x ~ N(0, I_d)``, ``y = A x + sigma * eps`` with ``A`` of shape ``(m, d)``.

    The posterior is Gaussian, ``p(x | y) = N(mu(y), Sigma)`` with
    ``Sigma = (I + A^T A / sigma^2)^{-1}`` (the same for every ``y``) and
    ``mu(y) = Sigma A^T y / sigma^2``.

    Args:
        matrix: ``A``, shape ``(m, d)``, finite.
        noise_std: ``sigma > 0``.
    """

    def __init__(self, matrix, noise_std: float = 0.1):
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or 0 in matrix.shape or not np.all(np.isfinite(matrix)):
            raise ValueError(f"LinearGaussian needs a finite matrix A of shape (m, d), got shape {matrix.shape}")
        self.matrix = matrix
        self.noise_std = _checks.noise_level(noise_std)
        precision = np.eye(self.dim) + matrix.T @ matrix / self.noise_std**2
        self._covariance = np.linalg.inv(precision)
        self._covariance = 0.5 * (self._covariance + self._covariance.T)

    @classmethod
    def random(cls, dim: int = 4, observations: int = 4, noise_std: float = 0.1, seed: int = 0) -> "LinearGaussian":
        """A problem with ``A``'s entries drawn from ``N(0, 1 / d)``."""
        rng = np.random.default_rng(seed)
        return cls(rng.standard_normal((observations, dim)) / np.sqrt(dim), noise_std)

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    @property
    def observation_dim(self) -> int:
        return self.matrix.shape[0]

    def _observations(self, y) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != self.observation_dim:
            raise ValueError(f"LinearGaussian needs y of shape (N, {self.observation_dim}), got {y.shape}")
        return y

    def __call__(self, x, seed: int | None = None) -> np.ndarray:
        """A noisy observation ``y`` of every row of ``x`` (shape ``(N, d)``)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"LinearGaussian needs x of shape (N, {self.dim}), got {x.shape}")
        noise = _checks.rng(seed).standard_normal((len(x), self.observation_dim))
        return (x @ self.matrix.T + self.noise_std * noise).astype(np.float32)

    def sample(self, n: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pairs ``(x, y)`` from the joint distribution (float32)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"LinearGaussian.sample needs n >= 1 as an int, got {n!r}")
        rng = _checks.rng(seed)
        x = rng.standard_normal((int(n), self.dim))
        return x.astype(np.float32), self(x, seed=rng.integers(2**31))

    def posterior_covariance(self) -> np.ndarray:
        """``Sigma = (I + A^T A / sigma^2)^{-1}``, shape ``(d, d)`` (float64)."""
        return self._covariance.copy()

    def posterior_mean(self, y) -> np.ndarray:
        """``mu(y) = Sigma A^T y / sigma^2``, shape ``(N, d)`` (float64)."""
        y = self._observations(y)
        return y @ (self._covariance @ self.matrix.T / self.noise_std**2).T


def gaussian_kl(mean_p, cov_p, mean_q, cov_q) -> float:
    """``KL(N(mean_p, cov_p) || N(mean_q, cov_q))`` in nats (float64, Cholesky-based)."""
    mean_p, mean_q = np.asarray(mean_p, np.float64), np.asarray(mean_q, np.float64)
    cov_p, cov_q = np.asarray(cov_p, np.float64), np.asarray(cov_q, np.float64)
    d = len(mean_p)
    chol_q = np.linalg.cholesky(cov_q)
    chol_p = np.linalg.cholesky(cov_p)
    solved = np.linalg.solve(chol_q, chol_p)
    diff = np.linalg.solve(chol_q, mean_q - mean_p)
    log_det = 2 * (np.log(np.diag(chol_q)).sum() - np.log(np.diag(chol_p)).sum())
    return float(0.5 * (np.sum(solved**2) + diff @ diff - d + log_det))
