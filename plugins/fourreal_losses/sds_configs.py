"""Config dataclasses of the video SDS losses (no torch import: validation stays fast).

See :mod:`fourreal_losses.sds` for what they do and ``docs/priors.md`` for the details.

Noise-level annealing (HiFA-style, paper §4 "we anneal the diffusion time steps similarly
to HiFA"): with ``p = inputs["sds_progress"]`` in [0,1] over the SDS phase,

    t_hi(p) = t_max - (t_max - t_min) * f(p),   f = sqrt (HiFA), linear, or 0 (none)

and the diffusion time passed to the prior is ``t = t_hi(p)`` (``sample: fixed``, HiFA's
deterministic schedule) or ``t ~ U[t_min, t_hi(p)]`` (``sample: uniform``). ``t`` is the
prior's normalised diffusion time in [0,1] (flow sigma for flow-matching priors; see
docs/priors.md for how each prior maps it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fourreal_core.config import Component, Ramp, component_default


@dataclass
class SDSCommonConfig:
    """Fields both video SDS losses share."""

    prior: Component("video_prior") = component_default("video_prior", "masked")  # type: ignore[valid-type]
    weight: Ramp = field(default_factory=lambda: Ramp(5.0))
    num_frames: int = 16  # M frames rendered per SDS step (paper D.1: 16)
    prompt: str = ""  # "" = the stage's prompt (inputs["prompt"])
    t_max: float = 0.98
    t_min: float = 0.02
    anneal: Literal["sqrt", "linear", "none"] = "sqrt"
    sample: Literal["fixed", "uniform"] = "fixed"
    shift_prob: float = 0.5  # D.1: random shift of up to S-1 pixels, else a random crop
    crop_scale: float = 0.5  # D.1: "randomly cropped to half its size"
    loss_on_known: bool = False  # also penalise the known (conditioning) frame 0


@dataclass
class SDSMultiViewConfig(SDSCommonConfig):
    """Multi-view SDS (§3.3 Eqs. 4-6, D.1): freeze-time trajectories from the canonical camera
    to a perturbed freeze-time camera; frame 0 is the known canonical frame I_c.

    ``perturb_radius`` is relative: the virtual camera is moved within a disc of radius
    ``perturb_radius x (distance from the sampled camera to the scene centre)`` in the
    sampled camera's image plane, then re-aimed at the scene centre.
    """

    weight: Ramp = field(default_factory=lambda: Ramp(5.0))  # paper E.1
    perturb_radius: float = 0.1
    # motion stage (the stage passes the reference video): "sampled" -- a reference frame j
    # drawn uniformly, the path rendered at its time t_j from its camera, frame 0 = I_j
    # (paper §3.4 item 2, D.1); "canonical" -- pinned at t_c with I_c (ablation). The
    # canonical stage is always at t_c.
    time: Literal["sampled", "canonical"] = "sampled"


@dataclass
class SDSTemporalConfig(SDSCommonConfig):
    """Temporal SDS (§3.4, D.1): a fixed camera, M times from the canonical time spanning a
    random fraction in ``[min_time_span, max_time_span]`` of the time range on one side of
    it; frame 0 (the condition) is the undeformed canonical render from that camera.

    ``camera: reference`` (default, the paper) films from the reference camera; ``camera:
    sampled`` from a freeze-time camera perturbed within ``perturb_radius`` as multi-view SDS
    does -- a departure from the paper, measured in bench/sds_ablation.py.
    """

    weight: Ramp = field(default_factory=lambda: Ramp(20.0))  # paper E.1
    min_time_span: float = 0.25
    max_time_span: float = 1.0
    camera: Literal["reference", "sampled"] = "reference"
    perturb_radius: float = 0.1  # for camera: sampled
