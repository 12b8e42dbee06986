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


@hookimpl
def fourreal_register(registry):
    registry.add(
        "deformer", "mlp", "fourreal_deformers.mlp:MLPDeformer", config=MLPDeformerConfig,
        description="Deformable-3DGS MLP (8x256, skip at 4, positional encoding): "
        "(x, t) or (x, frame code k) -> (dx, dq, ds); zero at the canonical frame",
    )
    registry.add(
        "deformer", "lbs", "fourreal_deformers.lbs:LBSDeformer", config=LBSDeformerConfig,
        description="Linear blend skinning: k-means bones with per-time rigid transforms "
        "(MLP of t or per-frame table), learnable skinning field",
    )
    registry.add(
        "deformer", "hexplane", "fourreal_deformers.hexplane:HexPlaneDeformer", config=HexPlaneDeformerConfig,
        description="K-Planes/HexPlane field for w_t (4DGaussians): six multi-scale feature planes "
        "(xy xz yz xt yt zt) and a small MLP head; zero at the canonical time",
    )
    registry.add(
        "deformer", "motion_bases", "fourreal_deformers.motion_bases:MotionBasesDeformer", config=MotionBasesDeformerConfig,
        description="Shape of Motion's motion bases for w_t: K rigid SE(3) trajectories over the reference "
        "frames, softmax blend weights per Gaussian; zero at the canonical time",
    )
