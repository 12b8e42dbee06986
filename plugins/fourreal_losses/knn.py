"""k nearest neighbours for the neighbourhood regularisers (``rigid``, ``rot``), computed
once per change of the Gaussian set and shared by every loss that needs them.

* :func:`knn` -- exact kNN, self excluded. CPU tensors: a KD-tree
  (``scipy.spatial.cKDTree``, O(N log N); ~50 ms for 20k points, k = 20, one core).
  CUDA (and MPS) tensors stay on the device: :func:`knn_brute_force`, an exact chunked search
  that is fast there (``chunk x N`` distance blocks, never ``N x N``).
* :class:`SharedKNN` -- the fitting engine's cache, passed to losses as ``inputs["knn"]``:
  ``get(points, k, version)`` computes once per ``gaussians_version`` (the engine bumps it
  whenever densification or growth adds or removes Gaussians) and serves every k from the
  largest computed. Between changes the neighbours are those of the set when it last
  changed; positions moving under the optimiser do not trigger a recomputation (the Eq. 9
  weights use the current positions every step). Any change of rows does, whatever its
  size: indices into a changed set are not valid, and with the KD-tree a recomputation
  costs less than one training step.
* :class:`KNNCache` -- the same for one loss used on its own (no engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

#: elements of one ``chunk x N`` distance block
DEFAULT_BLOCK_ELEMENTS = 1 << 25


@dataclass
class KNNResult:
    """Neighbours of every point.

    Attributes:
        index: ``[N,k]`` long, the k nearest *other* points, nearest first.
        dist2: ``[N,k]`` squared Euclidean distances to them.
    """

    index: torch.Tensor
    dist2: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.index.shape[1])


@torch.no_grad()
def knn(points: torch.Tensor, k: int, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> KNNResult:
    """The ``k`` nearest neighbours of each of ``points [N,D]`` among the others (self
    excluded; ``k`` is clipped to ``N - 1``): a KD-tree for CPU tensors, the exact chunked
    device search (:func:`knn_brute_force`) for CUDA / MPS ones. Results are on ``points``'
    device.

    Returns:
        :class:`KNNResult` with ``index [N,k]`` (nearest first) and ``dist2 [N,k]`` (float32).
    """
    if points.ndim != 2:
        raise ValueError(f"points must be [N,D], got {tuple(points.shape)}")
    if points.device.type != "cpu":
        return knn_brute_force(points, k, block_elements)
    return knn_kdtree(points, k)


def _prepare(points: torch.Tensor, k: int) -> tuple[int, int, Optional[KNNResult]]:
    """Shape check and ``k`` clamped to ``N-1``; the empty result when no neighbour exists."""
    if points.ndim != 2:
        raise ValueError(f"points must be [N,D], got {tuple(points.shape)}")
    n = points.shape[0]
    k = min(int(k), n - 1)
    if k < 1:
        e = torch.zeros(n, 0, device=points.device)
        return n, k, KNNResult(e.long(), e)
    return n, k, None


@torch.no_grad()
def knn_kdtree(points: torch.Tensor, k: int) -> KNNResult:
    """:func:`knn` with ``scipy.spatial.cKDTree`` (CPU; O(N log N)). Non-finite points get
    no neighbours of their own (index -> themselves excluded: the row holds the nearest
    finite points) -- they should not exist in a healthy fit."""
    import numpy as np
    from scipy.spatial import cKDTree

    n, k, empty = _prepare(points, k)
    if empty is not None:
        return empty
    p = points.detach().cpu().double().numpy()
    p = np.where(np.isfinite(p), p, 0.0)
    tree = cKDTree(p)
    dist, idx = tree.query(p, k=k + 1)  # the point itself is among the k+1 (distance 0)
    idx = idx.astype(np.int64)
    rows = np.arange(n)[:, None]
    is_self = idx == rows
    # drop the point itself (normally column 0; with duplicates it may sit anywhere)
    has_self = is_self.any(1)
    drop = np.where(has_self, is_self.argmax(1), k)  # no self found: drop the farthest
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    idx = idx[keep].reshape(n, k)
    d2 = (dist[keep].reshape(n, k) ** 2).astype(np.float32)
    return KNNResult(torch.from_numpy(idx).to(points.device), torch.from_numpy(d2).to(points.device))


@torch.no_grad()
def knn_brute_force(points: torch.Tensor, k: int, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> KNNResult:
    """Exact kNN in torch on any device, in row chunks: each chunk of queries builds its
    distance block to all points (``|a|^2 + |b|^2 - 2 a.b``, then refined exactly for the k
    winners) and keeps the ``k`` smallest, so memory is ``chunk x N``. O(N^2): the path for
    CUDA tensors (seconds for 300k points on a GPU), and the reference the KD-tree is tested
    against. Ties are broken by index order of ``topk``."""
    n, k, empty = _prepare(points, k)
    if empty is not None:
        return empty
    p = points.detach().float()
    sq = (p * p).sum(-1)  # [N]
    chunk = max(1, min(n, block_elements // max(n, 1)))
    idx_out = torch.empty(n, k, dtype=torch.long, device=p.device)
    d2_out = torch.empty(n, k, dtype=p.dtype, device=p.device)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        q = p[s:e]
        d2 = sq[s:e, None] + sq[None, :] - 2.0 * (q @ p.T)  # [c,N]
        rows = torch.arange(e - s, device=p.device)
        d2[rows, rows + s] = float("inf")  # exclude self
        # take a few spare candidates: the expanded form has rounding error, refine exactly
        kk = min(n - 1, k + 4)
        cand = d2.topk(kk, dim=1, largest=False).indices  # [c,kk]
        exact = ((p[cand] - q[:, None, :]) ** 2).sum(-1)
        exact = torch.where(cand == (rows + s)[:, None], torch.full_like(exact, float("inf")), exact)
        order = exact.topk(k, dim=1, largest=False)
        idx_out[s:e] = cand.gather(1, order.indices)
        d2_out[s:e] = order.values
    return KNNResult(idx_out, d2_out)


class SharedKNN:
    """kNN of the canonical Gaussians shared by all losses of a fitting engine
    (``inputs["knn"]``); see the module docstring.

    Attributes:
        computations: how many times kNN has been computed (for tests and logs).
    """

    def __init__(self, knn_fn: Optional[Callable[[torch.Tensor, int], KNNResult]] = None) -> None:
        self._knn = knn_fn or knn
        self._key: Optional[tuple] = None
        self._value: Optional[KNNResult] = None
        self._sliced: dict[int, KNNResult] = {}
        self.computations = 0

    def get(self, points: torch.Tensor, k: int, version: int) -> KNNResult:
        """The ``k`` nearest neighbours of ``points [N,3]`` for Gaussian set ``version``."""
        key = (int(version), int(points.shape[0]), str(points.device))
        if self._value is None or key != self._key or self._value.k < min(int(k), points.shape[0] - 1):
            self._value = self._knn(points, max(int(k), self._value.k if self._value is not None and key == self._key
                                                else 0))
            self._key = key
            self._sliced = {}
            self.computations += 1
        if self._value.k == k:
            return self._value
        if k not in self._sliced:  # nearest first: the k nearest are the first k columns
            self._sliced[k] = KNNResult(self._value.index[:, :k], self._value.dist2[:, :k])
        return self._sliced[k]

    def memo(self, key: tuple, make: Callable[[], Any]) -> Any:
        """A value derived from the neighbours, made once per ``key`` (e.g. a step's Eq. 9
        weights, shared by ``rigid`` and ``rot``); only the latest key is kept."""
        if getattr(self, "_memo_key", None) != key:
            self._memo_key, self._memo_value = key, make()
        return self._memo_value


class KNNCache:
    """kNN of the canonical Gaussians, recomputed only when the stage's
    ``gaussians_version`` changes (or, as a safety net, when N or the device changes).

    Attributes:
        computations: how many times kNN has been computed (for tests and logs).
    """

    def __init__(self, k: int, knn_fn: Optional[Callable[[torch.Tensor, int], KNNResult]] = None) -> None:
        self.k = int(k)
        self._knn = knn_fn or knn
        self._key: Optional[tuple] = None
        self._value: Optional[KNNResult] = None
        self.computations = 0

    def get(self, points: torch.Tensor, version: int) -> KNNResult:
        """Neighbours of ``points [N,3]`` for Gaussians ``version``."""
        key = (int(version), int(points.shape[0]), str(points.device))
        if self._value is None or key != self._key:
            self._value = self._knn(points, self.k)
            self._key = key
            self.computations += 1
        return self._value

    def clear(self) -> None:
        self._key, self._value = None, None
