"""Registers the deformers family: ``mlp`` (Deformable-3DGS MLP, temporal or per-frame)
and ``lbs`` (linear blend skinning). Implementations are imported inside the factories.

Both take ``setup(num_frames=, canonical=, canonical_means=)`` (zero at ``canonical``: a frame
index k_c or a time t_c) and
``deform(means [N,3], time, quats=None)``; swapping one for the other in a recipe is a
one-line change (``deformer: {name: lbs, params: {num_bones: 12}}``).
"""

from __future__ import annotations

from fourreal_core import hookimpl

from .configs import LBSDeformerConfig, MLPDeformerConfig


def _mlp(cfg: MLPDeformerConfig):
    from .mlp import MLPDeformer

    return MLPDeformer(cfg)


def _lbs(cfg: LBSDeformerConfig):
    from .lbs import LBSDeformer

    return LBSDeformer(cfg)


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
