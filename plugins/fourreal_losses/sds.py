"""Video score distillation (paper §3.3 Eqs. 4-6, §3.4, Appendix D.1): ``sds_multiview``
and ``sds_temporal``.

Both render an M-frame video (M=16) through ``inputs["render_video"]``, replace frame 0 by
the known canonical frame ``I_c``, preprocess (D.1: with equal probability a random shift
of up to ``S-1`` pixels, ``S`` the downsampling scale, or a random half-size crop; the
same transform for every frame), downsample to the prior's size, ask the prior for a
one-step x0 with ``I_c`` as the known frame 0, and return

    L = mean_k || x_k - stopgrad(x0_k) ||^2       over frames k = 1..M-1   (Eq. 6)

whose gradient is proportional to the SDS gradient of Poole et al.

What a stage puts in ``inputs``:

=====================  =====================================================================
``render_video``       ``(cameras: Cameras, times: Tensor[M]) -> Tensor[M,H,W,3]``,
                       differentiable through the Gaussians and the deformer
``freeze_cameras``     (multi-view) Cameras of the freeze-time video
``canonical_index``    (multi-view) index c of the canonical frame in ``freeze_cameras``
``canonical_image``    ``[H,W,3]`` the canonical frame I_c (reference frame c)
``reference_camera``   Cameras (1): the camera of I_c (the fixed reference camera)
``canonical_time``     optional float: the time of I_c in [0,1] (default 0, the paper's
                       convention of counting time from the canonical frame)
``sds_progress``       optional float in [0,1] over the SDS phase (noise annealing; default 0)
``prompt``             optional str (the config's ``prompt`` wins when set)
``rng``                optional ``torch.Generator`` (CPU) for every random choice
``sds_mode``           optional ``"multiview"`` / ``"temporal"``: when present, a loss whose
                       kind differs returns 0 without rendering (alternation, D.1)
=====================  =====================================================================

Alternation (D.1, "we alternately perform multi-view and temporal SDS"): a stage with both
losses sets ``inputs["sds_mode"] = alternate(step)`` (even steps multi-view, odd temporal;
``alternate(step, rng)`` picks at random); without ``sds_mode`` each loss runs every step.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F

from fourreal_core.errors import FourRealError
from fourreal_core.interfaces import Loss
from fourreal_core.quaternions import matrix_to_quat, quat_to_matrix, slerp
from fourreal_core.types import Cameras

from .sds_configs import SDSCommonConfig, SDSMultiViewConfig, SDSTemporalConfig

__all__ = [
    "alternate",
    "interpolate_cameras",
    "perturb_camera",
    "look_target",
    "preprocess_frames",
    "noise_level",
    "SDSMultiViewLoss",
    "SDSTemporalLoss",
    "get_prior",
    "clear_prior_cache",
]


def alternate(step: int, rng: Optional[torch.Generator] = None) -> str:
    """Which SDS runs at ``step``: ``"multiview"`` on even steps, ``"temporal"`` on odd ones;
    with ``rng``, either with probability 1/2 (the paper's random choice)."""
    if rng is not None:
        return "multiview" if float(torch.rand(1, generator=rng)) < 0.5 else "temporal"
    return "multiview" if int(step) % 2 == 0 else "temporal"


# --------------------------------------------------------------------------- cameras
def interpolate_cameras(cam_a: Cameras, cam_b: Cameras, M: int) -> Cameras:
    """``M`` cameras uniformly from ``cam_a`` to ``cam_b`` (one camera each): rotations by
    slerp, centres and intrinsics linearly. The first and last are exactly ``cam_a`` and
    ``cam_b``. Both must share one image size.

    Returns:
        Cameras with ``viewmats [M,4,4]``, ``Ks [M,3,3]``.
    """
    if len(cam_a) != 1 or len(cam_b) != 1:
        raise ValueError("interpolate_cameras takes one camera at each end")
    if (cam_a.width, cam_a.height) != (cam_b.width, cam_b.height):
        raise ValueError("interpolate_cameras: both cameras must share one image size")
    if M < 1:
        raise ValueError(f"M must be >= 1, got {M}")
    dev = cam_a.device
    va, vb = cam_a.viewmats[0].double(), cam_b.viewmats[0].to(dev).double()
    Ra, Rb = va[:3, :3], vb[:3, :3]  # world-to-camera rotations
    Ca, Cb = -Ra.T @ va[:3, 3], -Rb.T @ vb[:3, 3]  # centres
    s = torch.linspace(0.0, 1.0, M, dtype=torch.float64, device=dev)
    q = slerp(matrix_to_quat(Ra), matrix_to_quat(Rb), s)
    R = quat_to_matrix(q)  # [M,3,3]
    C = (1 - s)[:, None] * Ca[None] + s[:, None] * Cb[None]
    vm = torch.eye(4, dtype=torch.float64, device=dev).repeat(M, 1, 1)
    vm[:, :3, :3] = R
    vm[:, :3, 3] = -(R @ C[:, :, None])[:, :, 0]
    Ks = (1 - s)[:, None, None] * cam_a.Ks[0].double()[None] + s[:, None, None] * cam_b.Ks[0].to(dev).double()[None]
    vm, Ks = vm.float(), Ks.float()
    vm[0], Ks[0] = cam_a.viewmats[0], cam_a.Ks[0]
    if M > 1:
        vm[-1], Ks[-1] = cam_b.viewmats[0].to(dev), cam_b.Ks[0].to(dev)
    return Cameras(vm, Ks, cam_a.width, cam_a.height)


def look_target(cams: Cameras) -> torch.Tensor:
    """``[3]`` the point closest (least squares) to all optical axes of ``cams``: the centre
    an orbiting camera looks at. Degenerate (parallel axes, one camera): a point in front
    of the mean camera at the cameras' spread (or 1 unit)."""
    c2w = cams.camtoworlds.double()
    C = c2w[:, :3, 3]
    d = F.normalize(c2w[:, :3, 2], dim=-1)
    I = torch.eye(3, dtype=torch.float64, device=C.device)
    P = I[None] - d[:, :, None] * d[:, None, :]
    A = P.sum(0)
    b = (P @ C[:, :, None]).sum(0)[:, 0]
    ev = torch.linalg.eigvalsh(A)
    if len(cams) >= 2 and float(ev[0]) > 1e-3 * float(ev[-1]):
        p = torch.linalg.solve(A, b)
        # behind every camera means the axes diverge: fall through
        if bool(((p[None] - C) * d).sum(-1).mean() > 0):
            return p.float()
    spread = float((C - C.mean(0)).norm(dim=-1).mean()) if len(cams) > 1 else 0.0
    dist = 2.0 * spread if spread > 1e-6 else 1.0
    return (C.mean(0) + F.normalize(d.mean(0), dim=0) * dist).float()


def perturb_camera(cam: Cameras, target: torch.Tensor, radius: float, rng: Optional[torch.Generator] = None) -> Cameras:
    """A virtual camera near ``cam`` (one camera): its centre moved uniformly within a disc
    of radius ``radius x |target - centre|`` in ``cam``'s image plane (D.1: "within a
    specified radius of a circle centred on the sampled pose"), re-aimed at ``target`` with
    ``cam``'s up direction. ``radius == 0`` returns ``cam`` unchanged."""
    if radius <= 0:
        return cam
    c2w = cam.camtoworlds[0]
    C = c2w[:3, 3]
    x_ax, y_ax = c2w[:3, 0], c2w[:3, 1]
    target = target.to(C)
    dist = float((target - C).norm())
    u = torch.rand(2, generator=rng)
    r = radius * dist * math.sqrt(float(u[0]))
    ang = 2 * math.pi * float(u[1])
    C2 = C + r * (math.cos(ang) * x_ax + math.sin(ang) * y_ax)
    vm = Cameras.look_at(C2[None].cpu(), target[None].cpu(), ups=(-y_ax).cpu()).to(cam.device)
    return Cameras(vm, cam.Ks[:1].clone(), cam.width, cam.height)


# ----------------------------------------------------------------------- preprocessing
def preprocess_frames(
    frames: torch.Tensor, height: int, width: int, rng: Optional[torch.Generator] = None,
    shift_prob: float = 0.5, crop_scale: float = 0.5,
) -> tuple[torch.Tensor, dict]:
    """D.1 preprocessing of rendered frames before the low-resolution prior (differentiable).

    With probability ``shift_prob``: shift every frame by the same random ``(dy, dx)`` in
    ``[0, S-1]`` pixels (``S = round(min(H/height, W/width))``; edge pixels replicated), then
    downsample; otherwise crop the same random ``crop_scale``-sized window from every frame,
    then resize.

    Args:
        frames: ``[M,H,W,3]``.
    Returns:
        ``([M,height,width,3], info)`` with ``info = {"op": "shift"|"crop", ...}``.
    """
    M, H, W, _ = frames.shape
    x = frames.permute(0, 3, 1, 2)
    S = max(1, int(round(min(H / height, W / width))))
    if float(torch.rand(1, generator=rng)) < shift_prob:
        dy, dx = (int(v) for v in torch.randint(0, S, (2,), generator=rng))
        if S > 1:
            x = F.pad(x, (0, S - 1, 0, S - 1), mode="replicate")[:, :, dy : dy + H, dx : dx + W]
        info = {"op": "shift", "dy": dy, "dx": dx, "scale": S}
    else:
        ch, cw = max(1, int(round(H * crop_scale))), max(1, int(round(W * crop_scale)))
        y0 = int(torch.randint(0, H - ch + 1, (1,), generator=rng))
        x0 = int(torch.randint(0, W - cw + 1, (1,), generator=rng))
        x = x[:, :, y0 : y0 + ch, x0 : x0 + cw]
        info = {"op": "crop", "y0": y0, "x0": x0, "h": ch, "w": cw}
    if x.shape[-2:] != (height, width):
        shrink = x.shape[-2] > height or x.shape[-1] > width
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
    return x.permute(0, 2, 3, 1), info


def noise_level(cfg: SDSCommonConfig, progress: float, rng: Optional[torch.Generator] = None) -> float:
    """The annealed diffusion time in [t_min, t_max] at SDS-phase ``progress`` in [0,1]."""
    p = min(1.0, max(0.0, float(progress)))
    f = {"sqrt": math.sqrt(p), "linear": p, "none": 0.0}[cfg.anneal]
    hi = cfg.t_max - (cfg.t_max - cfg.t_min) * f
    if cfg.sample == "fixed":
        return hi
    return cfg.t_min + (hi - cfg.t_min) * float(torch.rand(1, generator=rng))


# ------------------------------------------------------------------------------ priors
_PRIORS: dict[tuple, Any] = {}


def get_prior(spec) -> Any:
    """Build a ``video_prior`` component once per (name, params): both SDS losses of a recipe
    that name the same prior share one instance (a video model is large)."""
    key = (spec.name, repr(spec.params))
    if key not in _PRIORS:
        _PRIORS[key] = spec.build()
    return _PRIORS[key]


def clear_prior_cache() -> None:
    _PRIORS.clear()


# ------------------------------------------------------------------------------ losses
class _VideoSDS(Loss):
    mode = ""

    def __init__(self, cfg: SDSCommonConfig, prior: Any = None) -> None:
        if cfg.num_frames < 2:
            raise FourRealError(f"{self.mode} SDS needs num_frames >= 2, got {cfg.num_frames}")
        self.cfg = cfg
        self.weight = cfg.weight
        self._prior = prior
        self.last: dict = {}

    @property
    def prior(self):
        if self._prior is None:
            self._prior = get_prior(self.cfg.prior)
        return self._prior

    def _missing(self, inputs: Mapping[str, Any]) -> None:
        missing = [k for k in self.requires if k not in inputs]
        if missing:
            raise FourRealError(f"loss sds_{self.mode} needs inputs {', '.join(missing)} that this stage does not provide")

    def _sds(self, frames: torch.Tensor, known0: torch.Tensor, inputs: Mapping[str, Any], extra: dict) -> torch.Tensor:
        """frames ``[M,H,W,3]`` rendered (differentiable); known0 ``[H,W,3]``."""
        rng = inputs.get("rng")
        prior = self.prior
        known0 = known0.to(frames).detach()
        if known0.shape != frames.shape[1:]:
            raise FourRealError(
                f"sds_{self.mode}: canonical_image is {tuple(known0.shape)} but renders are {tuple(frames.shape[1:])}"
            )
        video = torch.cat([known0[None], frames[1:]], dim=0)
        x, info = preprocess_frames(video, int(prior.height), int(prior.width), rng, self.cfg.shift_prob,
                                    self.cfg.crop_scale)
        t = noise_level(self.cfg, float(inputs.get("sds_progress", 0.0)), rng)
        prompt = self.cfg.prompt or str(inputs.get("prompt", ""))
        kwargs = {"generator": rng} if rng is not None else {}
        x0 = prior.predict_x0(x.detach(), t, known_frames={0: x[0].detach()}, prompt=prompt, **kwargs)
        x0 = x0.to(x).detach()
        sl = slice(0, None) if self.cfg.loss_on_known else slice(1, None)
        loss = ((x[sl] - x0[sl]) ** 2).mean()
        self.last = {"t": t, "preprocess": info, "x": x.detach(), "x0": x0, **extra}
        return loss

    def _skip(self, inputs: Mapping[str, Any]) -> Optional[torch.Tensor]:
        mode = inputs.get("sds_mode")
        if mode is not None and mode != self.mode:
            ref = inputs.get("canonical_image")
            dev = ref.device if isinstance(ref, torch.Tensor) else "cpu"
            self.last = {"skipped": True}
            return torch.zeros((), device=dev)
        return None


class SDSMultiViewLoss(_VideoSDS):
    """Multi-view SDS (§3.3, Eqs. 4-6; D.1)."""

    mode = "multiview"
    requires = ("render_video", "freeze_cameras", "canonical_index", "canonical_image", "reference_camera")

    def __init__(self, cfg: Optional[SDSMultiViewConfig] = None, prior: Any = None) -> None:
        super().__init__(cfg or SDSMultiViewConfig(), prior)

    def sample_trajectory(self, inputs: Mapping[str, Any]) -> tuple[Cameras, int]:
        """M cameras from the reference (canonical) camera to a perturbed freeze-time camera
        P_k (k != c). Returns ``(cameras, k)``."""
        rng = inputs.get("rng")
        cams: Cameras = inputs["freeze_cameras"]
        c = int(inputs["canonical_index"])
        ref: Cameras = inputs["reference_camera"]
        n = len(cams)
        choices = [i for i in range(n) if i != c % max(n, 1)] or list(range(n))
        k = choices[int(torch.randint(0, len(choices), (1,), generator=rng))]
        target = look_target(cams)
        p_hat = perturb_camera(cams[k], target, self.cfg.perturb_radius, rng)
        if (p_hat.width, p_hat.height) != (ref.width, ref.height):  # freeze video at another size
            Ks = p_hat.Ks.clone()
            Ks[:, 0] *= ref.width / p_hat.width
            Ks[:, 1] *= ref.height / p_hat.height
            p_hat = Cameras(p_hat.viewmats, Ks, ref.width, ref.height)
        return interpolate_cameras(ref[:1], p_hat, self.cfg.num_frames), k

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        skipped = self._skip(inputs)
        if skipped is not None:
            return skipped
        self._missing(inputs)
        traj, k = self.sample_trajectory(inputs)
        t_c = float(inputs.get("canonical_time", 0.0))
        times = torch.full((len(traj),), t_c, device=traj.device)
        frames = inputs["render_video"](traj, times)
        return self._sds(frames, inputs["canonical_image"], inputs, {"k": k, "cameras": traj, "times": times})


class SDSTemporalLoss(_VideoSDS):
    """Temporal SDS (§3.4, D.1): fixed reference camera, M times starting at the canonical time."""

    mode = "temporal"
    requires = ("render_video", "canonical_image", "reference_camera")

    def __init__(self, cfg: Optional[SDSTemporalConfig] = None, prior: Any = None) -> None:
        super().__init__(cfg or SDSTemporalConfig(), prior)

    def sample_times(self, inputs: Mapping[str, Any], device=None) -> torch.Tensor:
        """``[M]`` times from the canonical time ``t_c`` in one direction (forward or backward,
        chosen with probability proportional to the room on that side), spanning a random
        fraction in ``[min_time_span, max_time_span]`` of that room."""
        rng = inputs.get("rng")
        t_c = min(1.0, max(0.0, float(inputs.get("canonical_time", 0.0))))
        fwd, bwd = 1.0 - t_c, t_c
        if fwd + bwd <= 0:
            direction, room = 1.0, 0.0
        else:
            direction = 1.0 if float(torch.rand(1, generator=rng)) * (fwd + bwd) < fwd else -1.0
            room = fwd if direction > 0 else bwd
        lo, hi = sorted((self.cfg.min_time_span, self.cfg.max_time_span))
        span = room * (lo + (hi - lo) * float(torch.rand(1, generator=rng)))
        return t_c + direction * torch.linspace(0.0, span, self.cfg.num_frames, device=device)

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        skipped = self._skip(inputs)
        if skipped is not None:
            return skipped
        self._missing(inputs)
        ref: Cameras = inputs["reference_camera"][:1]
        M = self.cfg.num_frames
        cams = Cameras(ref.viewmats.expand(M, 4, 4).clone(), ref.Ks.expand(M, 3, 3).clone(), ref.width, ref.height)
        times = self.sample_times(inputs, device=ref.device)
        frames = inputs["render_video"](cams, times)
        return self._sds(frames, inputs["canonical_image"], inputs, {"cameras": cams, "times": times})
