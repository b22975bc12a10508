"""ByteTrack's Kalman filter over (centre x, centre y, aspect, height) and their velocities, batched over tracks.

Ultralytics' `KalmanFilterXYAH` operation for operation: the same constants, the same numpy calls
where it works on several tracks at once (predict), and their stacked equivalents where it loops
over tracks one by one (update), which give the same bits. The tests compare the states with
Ultralytics' to the bit, so no matching decision can differ by a rounding.
"""

from __future__ import annotations

import numpy as np

POSITION = 1.0 / 20  # noise of the position, per pixel of box height
VELOCITY = 1.0 / 160  # noise of the velocity, per pixel of box height
MOTION = np.eye(8)  # constant velocity, one frame per step
MOTION[range(4), range(4, 8)] = 1.0


def _std(h: np.ndarray, weight: float, aspect: float) -> np.ndarray:
    """[K, 4] standard deviations of (x, y, aspect, height): `weight` times the height, the aspect's own."""
    scaled = weight * h
    return np.stack([scaled, scaled, np.full_like(h, aspect), scaled], axis=1)


def _diagonal(std: np.ndarray) -> np.ndarray:
    """[K, n] standard deviations -> [K, n, n] diagonal covariances."""
    n = std.shape[1]
    out = np.zeros((*std.shape, n))
    out[:, range(n), range(n)] = np.square(std)
    return out


def initiate(xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from measurements [K, 4]: means [K, 8] at rest, covariances [K, 8, 8]."""
    z = np.asarray(xyah, dtype=np.float64)
    h = z[:, 3]
    mean = np.concatenate([z, np.zeros_like(z)], axis=1)
    std = np.concatenate([_std(h, 2 * POSITION, 1e-2), _std(h, 10 * VELOCITY, 1e-5)], axis=1)
    return mean, _diagonal(std)


def predict(mean: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame ahead for tracks [K, 8] and [K, 8, 8] (Ultralytics' multi_predict)."""
    h = mean[:, 3]
    noise = _diagonal(np.concatenate([_std(h, POSITION, 1e-2), _std(h, VELOCITY, 1e-5)], axis=1))
    left = np.dot(MOTION, covariance).transpose((1, 0, 2))
    return np.dot(mean, MOTION.T), np.dot(left, MOTION.T) + noise


def update(mean: np.ndarray, covariance: np.ndarray, xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct tracks [K, 8] and [K, 8, 8] with their matched measurements [K, 4]."""
    projected = covariance[:, :4, :4] + _diagonal(_std(mean[:, 3], POSITION, 1e-1))
    gain = np.linalg.solve(projected, covariance[:, :, :4].transpose(0, 2, 1)).transpose(0, 2, 1)
    innovation = xyah - mean[:, :4]
    new_mean = mean + np.matmul(innovation[:, None, :], gain.transpose(0, 2, 1))[:, 0]
    return new_mean, covariance - np.matmul(gain, np.matmul(projected, gain.transpose(0, 2, 1)))
