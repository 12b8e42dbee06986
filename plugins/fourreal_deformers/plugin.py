"""Registers the deformers family: ``mlp`` (Deformable-3DGS MLP, temporal or per-frame),
``lbs`` (linear blend skinning), ``hexplane`` (K-Planes grid, temporal) and
``motion_bases`` (Shape of Motion's rigid motion bases, temporal). Implementations are imported inside the factories.

Both take ``setup(num_frames=, canonical=, canonical_means=)`` (zero at ``canonical``: a frame
index k_c or a time t_c) and
``deform(means [N,3], time, quats=None)``; swapping one for the other in a recipe is a
one-line change (``deformer: {name: lbs, params: {num_bones: 12}}``).
"""

from __future__ import annotations

from fourreal_core import hookimpl

from .configs import HexPlaneDeformerConfig, LBSDeformerConfig, MLPDeformerConfig, MotionBasesDeformerConfig


def _mlp(cfg: MLPDeformerConfig):
    from .mlp import MLPDeformer

    return MLPDeformer(cfg)


def _lbs(cfg: LBSDeformerConfig):
    from .lbs import LBSDeformer

    return LBSDeformer(cfg)


def _hexplane(cfg: HexPlaneDeformerConfig):
    from .hexplane import HexPlaneDeformer

    return HexPlaneDeformer(cfg)


def _motion_bases(cfg: MotionBasesDeformerConfig):
    from .motion_bases import MotionBasesDeformer

    return MotionBasesDeformer(cfg)


@hookimpl
def fourreal_register(registry):
    registry.add(
        "deformer", "mlp", _mlp, config=MLPDeformerConfig,
        description="Deformable-3DGS MLP (8x256, skip at 4, positional encoding): "
        "(x, t) or (x, frame code k) -> (dx, dq, ds); zero at the canonical frame",
    )
    registry.add(
        "deformer", "lbs", _lbs, config=LBSDeformerConfig,
        description="Linear blend skinning: k-means bones with per-time rigid transforms "
        "(MLP of t or per-frame table), learnable skinning field",
    )
    registry.add(
        "deformer", "hexplane", _hexplane, config=HexPlaneDeformerConfig,
        description="K-Planes/HexPlane field for w_t (4DGaussians): six multi-scale feature planes "
        "(xy xz yz xt yt zt) and a small MLP head; zero at the canonical time",
    )
    registry.add(
        "deformer", "motion_bases", _motion_bases, config=MotionBasesDeformerConfig,
        description="Shape of Motion's motion bases for w_t: K rigid SE(3) trajectories over the reference "
        "frames, softmax blend weights per Gaussian; zero at the canonical time",
    )
