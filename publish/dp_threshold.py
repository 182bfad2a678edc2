"""How often noise alone publishes a cell: the distribution of a sum of discrete Laplace draws, and the
publication threshold of the noisy device count under differential privacy (``publish.noise``).

A cell's noisy device count is the sum of one discrete Laplace draw per public operator.  A cell without
any device is published when that sum reaches the threshold, so the threshold is raised above k until the
expected number of such cells per day, over the dataset's public universe, is at most ``dp_false_cells``.
Every input is public (noise scale, number of operators, universe size, k): the threshold is too.
"""

from __future__ import annotations

import math

import numpy as np


def sum_distribution(scale: float, terms: int) -> tuple[np.ndarray, np.ndarray]:
    """The values and probabilities of the sum of ``terms`` independent discrete Laplace(``scale``) draws
    (pmf proportional to exp(-|x| / scale), each truncated below exp(-60) of its peak)."""
    reach = int(math.ceil(scale * 60)) + 1
    x = np.arange(-reach, reach + 1)
    one = np.exp(-np.abs(x) / scale)
    one /= one.sum()
    total = np.array([1.0])
    for _ in range(max(1, terms)):
        total = np.convolve(total, one)
    return np.arange(total.size) - (total.size - 1) // 2, total


def sum_tail(scale: float, terms: int, at_least: int) -> float:
    """P(sum of ``terms`` discrete Laplace(``scale``) draws >= ``at_least``)."""
    values, pmf = sum_distribution(scale, terms)
    return float(pmf[values >= at_least].sum())


def publication_threshold(scale: float, terms: int, cells: float, k: int, false_cells: float) -> int:
    """The smallest noisy device count, at least ``k``, that noise alone reaches in at most ``false_cells``
    of ``cells`` cells without any device (in expectation).  Public inputs only."""
    values, pmf = sum_distribution(scale, terms)
    tail = np.cumsum(pmf[::-1])[::-1]  # tail[i] = P(sum >= values[i])
    for threshold in range(k, int(values[-1]) + 2):
        at = np.searchsorted(values, threshold)
        if at >= values.size or cells * tail[at] <= false_cells:
            return threshold
    return int(values[-1]) + 1
