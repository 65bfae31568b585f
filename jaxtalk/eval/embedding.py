"""2-D embeddings of style codes for the SVP Fig. 5 analogue: exact t-SNE (van der Maaten & Hinton, 2008) in
numpy, for the few hundred points a fidelity bench has (O(N^2) memory and time)."""

from __future__ import annotations

import numpy as np


def _conditional_p(d2: np.ndarray, perplexity: float, tol: float = 1e-5, iters: int = 64) -> np.ndarray:
    """Row-wise Gaussian affinities whose entropy matches log(perplexity) (bisection on the precision beta)."""
    n = d2.shape[0]
    p = np.zeros_like(d2)
    target = np.log(perplexity)
    for i in range(n):
        row = np.delete(d2[i], i)
        row = row - row.min()
        lo, hi, beta = 0.0, np.inf, 1.0 / max(np.median(row), 1e-12)
        for _ in range(iters):
            w = np.exp(-row * beta)
            s = w.sum()
            entropy = np.log(s) + beta * np.sum(row * w) / s
            if abs(entropy - target) < tol:
                break
            if entropy > target:  # too flat: sharpen
                lo = beta
                beta = beta * 2.0 if hi == np.inf else 0.5 * (beta + hi)
            else:
                hi = beta
                beta = 0.5 * (beta + lo)
        p[i, np.arange(n) != i] = w / s
    return p


def tsne(x: np.ndarray, perplexity: float = 15.0, steps: int = 750, learning_rate: float = 100.0,
         seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) t-SNE embedding (early exaggeration 12 for 100 steps, momentum 0.5 then 0.8)."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] < 4:
        raise ValueError(f"tsne: need (N, D) with N >= 4 points, got {x.shape}")
    n = x.shape[0]
    perplexity = min(perplexity, (n - 1) / 3)
    d2 = np.sum((x[:, None] - x[None]) ** 2, -1)
    p = _conditional_p(d2, perplexity)
    p = np.maximum((p + p.T) / (2 * n), 1e-12)
    rng = np.random.default_rng(seed)
    y = rng.normal(0.0, 1e-4, (n, 2))
    velocity, gains = np.zeros_like(y), np.ones_like(y)
    for step in range(steps):
        exaggeration = 12.0 if step < 100 else 1.0
        diff = y[:, None] - y[None]
        num = 1.0 / (1.0 + np.sum(diff ** 2, -1))
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        grad = 4.0 * np.sum(((exaggeration * p - q) * num)[..., None] * diff, axis=1)
        gains = np.where(np.sign(grad) != np.sign(velocity), gains + 0.2, gains * 0.8).clip(0.01)
        velocity = (0.5 if step < 250 else 0.8) * velocity - learning_rate * gains * grad
        y = y + velocity
        y -= y.mean(0)
    return y
