"""Config dataclasses of the deformers family (no torch import: validation stays fast).

Both deformers implement :class:`fourreal_core.interfaces.Deformer` with the same call::

    deformer.setup(num_frames=K, canonical=k_c or t_c, canonical_means=x0)   # before the optimiser
    d = deformer.deform(means, time, quats=None)   # Deformation(dx [N,3], dq [N,4], ds [N,3]|None)

so a recipe swaps one for the other by changing ``name: mlp`` to ``name: lbs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fourreal_core.config import ConfigValueError, at_least


@dataclass
class MLPDeformerConfig:
    """Deformable-3DGS deformation MLP (paper D.3): ``(gamma(x), gamma(t)) -> (dx, dq, ds)``.

    ``depth`` ReLU layers of ``width`` units, the encoded input concatenated again after
    layer ``depth // 2`` (NeRF-style skip), three zero-initialised linear heads.

    * ``time_input: time`` -- temporal deformation w_t(x, t): ``time`` is a float t in [0,1]
      (or a tensor ``[N]``/``[N,1]`` of per-Gaussian times), encoded with ``t_multires``
      frequencies. The output is exactly zero at the canonical time ``setup(canonical=t_c)``
      (it is ``f(x, t) - f(x, t_c)``).
    * ``time_input: frame_code`` -- per-frame deformation w_mv(x, k) (paper Sec. 3.3):
      ``time`` is an int frame index k in [0, K); a learned code of ``code_dim`` numbers
      per frame (K from ``setup(num_frames=K)``) is fed to the network *without* positional
      encoding (a learned latent needs none, as in Nerfies / NeRF-W). The output is exactly
      zero at the canonical frame ``setup(canonical=k_c)``.
    """

    width: int = 256
    depth: int = 8
    x_multires: int = 10  # frequencies 2^0..2^(L-1) per coordinate; the input is included
    t_multires: int = 6
    time_input: Literal["time", "frame_code"] = "time"
    code_dim: int = 16  # frame_code only
    code_init_std: float = 1.0  # frame_code only: codes start as N(0, std^2)
    predict_scale: bool = True  # Eq. 2's per-frame deformation uses dx, dq only: set False
    chunk: int = 0  # evaluate at most this many Gaussians at once (0: all); see MLPDeformer
    lr: float = 1e-3  # paper D.4: decays exponentially to lr_final (read by the training stage)
    lr_final: float = 1e-5

    def __post_init__(self) -> None:
        at_least(self, width=1, depth=1, x_multires=0, t_multires=0, code_dim=1, chunk=0)


@dataclass
class LBSDeformerConfig:
    """Linear blend skinning for articulated motion.

    ``num_bones`` bones are placed by k-means on the canonical Gaussians
    (``setup(canonical_means=...)``). Each bone b has a rigid transform per time
    (rotation ``R_b`` about its rest centre ``c_b``, translation ``t_b``); a Gaussian moves
    by the skinning-weighted blend ``dx = sum_b w_b [(R_b - I)(x - c_b) + t_b]`` and turns by
    the blended bone rotation. Skinning weights are a learnable field of the canonical
    position, ``softmax_b(-|x - s_b|^2 / sigma_b^2 + r_b(x))`` (learnable centres ``s_b``
    starting at ``c_b``, per-bone widths ``sigma_b`` starting at ``skin_sigma`` x the median
    distance between neighbouring bones, and a zero-initialised residual MLP ``r`` on
    ``gamma(x)``), so they are defined for Gaussians added by densification.

    * ``motion: mlp`` -- a small MLP ``gamma(t) -> (quaternion residual, translation)`` per
      bone; ``time`` is a float t in [0,1].
    * ``motion: per_frame`` -- a learned table of per-bone transforms per frame (K from
      ``setup(num_frames=K)``); ``time`` is an int frame index k (identity exactly at
      ``setup(canonical=k)``), or a float t in [0,1] which interpolates linearly between
      frames ``k = t (K-1)``.
    """

    num_bones: int = 8
    motion: Literal["mlp", "per_frame"] = "mlp"
    t_multires: int = 6
    motion_width: int = 128
    motion_depth: int = 3  # hidden ReLU layers of the motion MLP
    skin_sigma: float = 0.5  # initial skinning width, relative to the bone spacing
    skin_mlp_width: int = 64  # residual skinning-logit MLP (0: distance-based weights only)
    skin_mlp_depth: int = 2
    skin_multires: int = 4
    kmeans_iters: int = 30
    kmeans_max_points: int = 100_000  # k-means on a random subset of at most this many
    seed: int = 0  # k-means initialisation
    chunk: int = 0  # evaluate at most this many Gaussians at once (0: all)
    lr: float = 1e-3
    lr_final: float = 1e-5

    def __post_init__(self) -> None:
        at_least(self, num_bones=1, t_multires=0, motion_width=1, motion_depth=0, skin_sigma=0, skin_mlp_width=0,
                 skin_mlp_depth=0, skin_multires=0, kmeans_iters=1, kmeans_max_points=1, chunk=0)


@dataclass
class HexPlaneDeformerConfig:
    """K-Planes / HexPlane field for w_t(x, t) (4DGaussians' deformation field): six feature
    planes per scale (xy, xz, yz, xt, yt, zt), multiplied per scale, concatenated over scales,
    then a ``depth``-layer ReLU MLP of ``width`` units and zero-initialised heads for
    ``dx``, ``dq``, ``ds``. ``time`` is a float t in [0,1]; exactly zero at the canonical time.

    resolution: space-plane cells per axis at scale 1 (scale m has ``resolution * m``);
    time_resolution: cells along t (about half the reference frames, as 4DGaussians);
    the box is fitted to the canonical Gaussians by ``setup`` (1-99th percentiles, widened
    by ``bound_margin`` of its size on each side; positions outside are clamped to it).
    """

    resolution: int = 32
    time_resolution: int = 16
    multires: list[int] = field(default_factory=lambda: [1, 2])
    features: int = 16
    width: int = 64
    depth: int = 1
    predict_scale: bool = True
    bound_margin: float = 0.1
    lr: float = 1e-2  # decays 100x over the stage; higher than 4DGaussians (1.6e-3 over 14k+ steps): our stages are short
    lr_final: float = 1e-4

    def __post_init__(self) -> None:
        at_least(self, resolution=2, time_resolution=2, features=1, width=1, depth=0, bound_margin=0)
        if not self.multires or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.multires):
            raise ConfigValueError("multires", f"must be a non-empty list of scales >= 1, got {self.multires}")

@dataclass
class MotionBasesDeformerConfig:
    """Shape of Motion's motion bases for w_t (Wang et al. 2024): ``num_bases`` rigid SE(3)
    trajectories over the reference video -- a per-frame table of (quaternion residual,
    translation) per basis, linear in time between frames -- and per-Gaussian softmax blend
    weights: a Gaussian moves by the weighted blend of the bases' rigid motions, so a few
    tracks on part of a subject move all of it. Exactly zero at the canonical time t_c (the
    table's value at t_c is subtracted). ``time`` is a float t in [0,1]; the frame count comes
    from ``setup(num_frames=T)``.

    The blend weights are a field of the canonical position (so Gaussians added by
    densification get weights): ``softmax_b(-|x - s_b|^2 / sigma_b^2 + r_b(x))``, centres
    ``s_b`` from k-means on the canonical Gaussians, widths starting at ``weight_sigma`` x the
    median distance between neighbouring centres, and a zero-initialised residual MLP ``r``
    (``weight_mlp_width`` 0: distance only). The machinery is the ``lbs`` deformer's with
    ``motion: per_frame`` (docs/deformers-and-losses.md); :meth:`init_from_tracks` sets the
    trajectories from 3D tracks (Procrustes per basis), as Shape of Motion initialises them.
    """

    num_bases: int = 10
    weight_sigma: float = 0.5
    weight_mlp_width: int = 64
    weight_mlp_depth: int = 2
    weight_multires: int = 4
    kmeans_iters: int = 30
    seed: int = 0
    chunk: int = 0
    lr: float = 1e-2  # a table, not a network: larger steps (as hexplane)
    lr_final: float = 1e-4

    def __post_init__(self) -> None:
        at_least(self, num_bases=1, weight_mlp_width=0, weight_mlp_depth=0, weight_multires=0, kmeans_iters=1,
                 chunk=0)
        if not self.weight_sigma > 0:
            raise ConfigValueError("weight_sigma", f"must be > 0, got {self.weight_sigma}")
