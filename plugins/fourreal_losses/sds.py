"""Video score distillation (paper §3.3 Eqs. 4-6, §3.4, Appendix D.1): ``sds_multiview``
and ``sds_temporal``.

Both render an M-frame video (M=16) through ``inputs["render_video"]``, replace frame 0 by
a known conditioning frame, cut the frames to the prior's SDS size (:func:`working_size`:
only ever downsampled, by the real scale S; a centred crop where the aspect differs, never
a stretch) after the D.1 preprocessing (with equal probability a random shift of up to
``ceil(S)-1`` pixels, or a random half-size crop; the same transform for every frame), ask
the prior for a one-step x0 -- with the conditioning frame as known frame 0, the prompt, and
the ``cameras`` and ``times`` of the frames it scores (keyword arguments, given to priors
whose ``predict_x0`` takes them; the cameras follow the crop and the resize) -- and return

    L = mean_k || x_k - stopgrad(x0_k) ||^2       over frames k = 1..M-1   (Eq. 6)

whose gradient is proportional to the SDS gradient of Poole et al.

==================  ======================  ==============================================
loss                the video               frame 0 (condition), prompt
==================  ======================  ==============================================
multi-view,         reference camera ->     I_c; the freeze-time prompt
canonical stage     perturbed freeze-time
                    camera, at t_c
multi-view,         reference camera at t   I_t (the real reference frame at t);
motion stage        -> perturbed freeze-    the freeze-time prompt
                    time camera, all at a
                    sampled reference time
                    t (``time: sampled``)
temporal            reference camera (or    the undeformed canonical render from that
                    ``camera: sampled``),   camera (detached); the reference prompt
                    M times from t_c
==================  ======================  ==============================================

What a stage puts in ``inputs``:

=====================  =====================================================================
``render_video``       ``(cameras: Cameras, times: Tensor[M]) -> Tensor[M,H,W,3]``,
                       differentiable through the Gaussians and the deformer
``freeze_cameras``     (multi-view; temporal with ``camera: sampled``) Cameras of the
                       freeze-time video
``canonical_view``     (multi-view) k_c, the index of the canonical frame in ``freeze_cameras``
``canonical_image``    ``[H,W,3]`` the canonical frame I_c (reference frame c)
``reference_camera``   Cameras (1): the camera of I_c (the fixed reference camera)
``canonical_time``     optional float: the time of I_c in [0,1] (default 0, the paper's
                       convention of counting time from the canonical frame)
``reference_frames``   optional ``[T,H,W,3]``: the reference video (motion stage); with it
                       multi-view SDS samples its time (``time: sampled``)
``reference_times``    optional ``[T]``: their times (default evenly spaced in [0,1])
``reference_cameras``  optional Cameras (T): their cameras (default ``reference_camera``)
``render_canonical``   optional ``(cameras) -> Tensor[C,H,W,3]``: the undeformed canonical
                       Gaussians (temporal frame 0; default the render at t_c, where w_t = 0)
``sds_progress``       optional float in [0,1] over the SDS phase (noise annealing; default 0)
``prompt``             optional str: the reference prompt (the config's ``prompt`` wins)
``freeze_prompt``      optional str: the freeze-time prompt (multi-view; default ``prompt``)
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
from fourreal_formats.quaternions import matrix_to_quat, quat_to_matrix, slerp
from fourreal_core.types import Cameras

from .sds_configs import SDSCommonConfig, SDSMultiViewConfig, SDSTemporalConfig

__all__ = [
    "alternate",
    "interpolate_cameras",
    "perturb_camera",
    "look_target",
    "preprocess_frames",
    "sds_size",
    "working_size",
    "window_cameras",
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
def sds_size(prior) -> tuple[int, int, int]:
    """``(height, width, multiple)``: the size a prior scores SDS videos at and the multiple
    its height and width must be (:meth:`fourreal_core.interfaces.VideoPrior.sds_size`)."""
    h, w, m = prior.sds_size()
    return int(h), int(w), max(1, int(m))


def working_size(H: int, W: int, height: int, width: int, multiple: int = 1) -> tuple[int, int]:
    """The size SDS frames are scored at for ``H x W`` renders and a prior whose SDS size is
    ``height x width`` (multiples of ``multiple``): renders are only ever *downsampled*, by
    ``S = max(1, min(H/height, W/width))``, and never stretched -- what does not fit the
    prior's aspect is cut away by a centred crop (:func:`preprocess_frames`). Renders smaller
    than the prior's size are scored at their own size (rounded down to the multiple).

    >>> working_size(288, 512, 36, 64)     # the paper: S = 8
    (36, 64)
    >>> working_size(96, 128, 36, 64)      # 4:3 renders, 16:9 prior: S = 2, 72x128 centre
    (36, 64)
    >>> working_size(32, 32, 480, 832, 16) # smaller than the prior: no upsampling
    (32, 32)
    """
    S = max(1.0, min(H / height, W / width))
    h = min(height, int(math.floor(H / S + 1e-6))) // multiple * multiple
    w = min(width, int(math.floor(W / S + 1e-6))) // multiple * multiple
    if h < 1 or w < 1:
        raise FourRealError(f"SDS: {H}x{W} renders are smaller than the prior's size multiple {multiple}")
    return h, w


def preprocess_frames(
    frames: torch.Tensor, height: int, width: int, rng: Optional[torch.Generator] = None,
    shift_prob: float = 0.5, crop_scale: float = 0.5,
) -> tuple[torch.Tensor, dict]:
    """D.1 preprocessing of rendered frames before the low-resolution prior (differentiable).

    ``S = min(H/height, W/width)`` is the real downsampling scale (>= 1: renders are never
    upsampled, see :func:`working_size`). The frames are cut to a window of the prior's
    aspect -- ``round(height*S) x round(width*S)`` pixels, centred (a crop, never a stretch)
    -- and downsampled to ``height x width``. Before that, the same random transform for every
    frame: with probability ``shift_prob`` the window is shifted by ``(dy, dx)`` in
    ``[0, ceil(S)-1]`` pixels (D.1 "shifted by S-1 pixels"; edge pixels replicated where it
    leaves the render); otherwise a random window ``crop_scale`` times that size (D.1 "cropped
    to half its size"; never smaller than ``height x width``, so still no upsampling) is cut
    at a uniformly random position.

    Args:
        frames: ``[M,H,W,3]``.
    Returns:
        ``([M,height,width,3], info)``; ``info["op"]`` is ``"shift"`` or ``"crop"`` and
        ``info["window"] = (y0, x0, h, w)`` the render pixels that became the output
        (:func:`window_cameras` turns it into the cameras of the output).
    """
    M, H, W, _ = frames.shape
    S = min(H / height, W / width)
    if S < 1.0 - 1e-6:
        raise FourRealError(f"SDS never upsamples: {H}x{W} renders are smaller than {height}x{width}")
    x = frames.permute(0, 3, 1, 2)
    rh, rw = min(H, max(height, round(height * S))), min(W, max(width, round(width * S)))
    if float(torch.rand(1, generator=rng)) < shift_prob:
        n = max(1, math.ceil(S - 1e-6))
        dy, dx = (int(v) for v in torch.randint(0, n, (2,), generator=rng))
        y0, x0 = (H - rh) // 2 + dy, (W - rw) // 2 + dx
        pad_b, pad_r = max(0, y0 + rh - H), max(0, x0 + rw - W)
        if pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b), mode="replicate")
        info = {"op": "shift", "dy": dy, "dx": dx, "scale": S}
    else:
        s2 = max(1.0, S * crop_scale)
        rh, rw = min(H, max(height, round(height * s2))), min(W, max(width, round(width * s2)))
        y0 = int(torch.randint(0, H - rh + 1, (1,), generator=rng))
        x0 = int(torch.randint(0, W - rw + 1, (1,), generator=rng))
        info = {"op": "crop", "y0": y0, "x0": x0, "h": rh, "w": rw, "scale": s2}
    x = x[:, :, y0 : y0 + rh, x0 : x0 + rw]
    info["window"] = (y0, x0, rh, rw)
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x.permute(0, 2, 3, 1), info


def window_cameras(cams: Cameras, info: Mapping[str, Any], height: int, width: int) -> Cameras:
    """The cameras that see what :func:`preprocess_frames` made of their renders: the
    principal point moves by the window's corner and the focal lengths and principal point
    scale by ``height/h`` and ``width/w`` (pixel-edge convention, as the bilinear resize)."""
    y0, x0, h, w = info["window"]
    sy, sx = h / height, w / width
    Ks = cams.Ks.clone()
    Ks[:, 0, 0] = Ks[:, 0, 0] / sx
    Ks[:, 0, 2] = (Ks[:, 0, 2] - x0) / sx
    Ks[:, 1, 1] = Ks[:, 1, 1] / sy
    Ks[:, 1, 2] = (Ks[:, 1, 2] - y0) / sy
    return Cameras(cams.viewmats.clone(), Ks, width, height)


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
def _repeat(cam: Cameras, M: int) -> Cameras:
    """One camera, ``M`` times (a fixed-viewpoint video)."""
    return Cameras(cam.viewmats[:1].expand(M, 4, 4).clone(), cam.Ks[:1].expand(M, 3, 3).clone(), cam.width, cam.height)


def _at_size(cam: Cameras, like: Cameras) -> Cameras:
    """``cam`` with intrinsics rescaled to ``like``'s image size (a freeze-time video stored
    at another size)."""
    if (cam.width, cam.height) == (like.width, like.height):
        return cam
    Ks = cam.Ks.clone()
    Ks[:, 0] *= like.width / cam.width
    Ks[:, 1] *= like.height / cam.height
    return Cameras(cam.viewmats, Ks, like.width, like.height)


class _VideoSDS(Loss):
    mode = ""

    #: TEST-ONLY switch: added to the times handed to the prior (not to the renders), so a
    #: test can check that an oracle prior fed misaligned times stops helping. Never set it
    #: in a recipe (it is not a config field on purpose).
    test_time_shift: float = 0.0

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

    def _perturbed_freeze_camera(self, inputs: Mapping[str, Any], radius: float) -> tuple[Cameras, int]:
        """A freeze-time camera P_k (k != c) perturbed within ``radius`` (D.1), at the
        reference camera's image size. Returns ``(camera, k)``."""
        rng = inputs.get("rng")
        cams: Cameras = inputs["freeze_cameras"]
        c = int(inputs.get("canonical_view", 0))
        n = len(cams)
        choices = [i for i in range(n) if i != c % max(n, 1)] or list(range(n))
        k = choices[int(torch.randint(0, len(choices), (1,), generator=rng))]
        p_hat = perturb_camera(cams[k], look_target(cams), radius, rng)
        return _at_size(p_hat, inputs["reference_camera"]), k

    def _sds(self, frames: torch.Tensor, known0: torch.Tensor, cameras: Cameras, times: torch.Tensor,
             prompt: str, inputs: Mapping[str, Any], extra: dict) -> torch.Tensor:
        """frames ``[M,H,W,3]`` rendered (differentiable) from ``cameras`` at ``times``;
        known0 ``[H,W,3]`` replaces frame 0 (the condition)."""
        rng = inputs.get("rng")
        prior = self.prior
        known0 = known0.to(frames).detach()
        if known0.shape != frames.shape[1:]:
            raise FourRealError(
                f"sds_{self.mode}: the conditioning frame is {tuple(known0.shape)} but renders are {tuple(frames.shape[1:])}"
            )
        video = torch.cat([known0[None], frames[1:]], dim=0)
        H, W = int(frames.shape[1]), int(frames.shape[2])
        h, w = working_size(H, W, *sds_size(prior))
        x, info = preprocess_frames(video, h, w, rng, self.cfg.shift_prob, self.cfg.crop_scale)
        t = noise_level(self.cfg, float(inputs.get("sds_progress", 0.0)), rng)
        prior_cams = window_cameras(cameras, info, h, w)
        prior_times = times.detach().float() + float(self.test_time_shift)
        kwargs: dict = {"generator": rng} if rng is not None else {}
        if "cameras" in prior.conditions:
            kwargs["cameras"] = prior_cams
        if "times" in prior.conditions:
            kwargs["times"] = prior_times
        x0 = prior.predict_x0(x.detach(), t, known_frames={0: x[0].detach()}, prompt=prompt, **kwargs)
        x0 = x0.to(x).detach()
        if x0.shape != x.shape:
            raise FourRealError(f"sds_{self.mode}: the prior returned {tuple(x0.shape)} for a {tuple(x.shape)} video")
        sl = slice(0, None) if self.cfg.loss_on_known else slice(1, None)
        loss = ((x[sl] - x0[sl]) ** 2).mean()
        self.last = {"t": t, "preprocess": info, "x": x.detach(), "x0": x0, "cameras": cameras, "times": times,
                     "prior_cameras": prior_cams, "prior_times": prior_times, "prompt": prompt,
                     "known0": known0, **extra}
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
    """Multi-view SDS (§3.3 Eqs. 4-6; §3.4 item 2; D.1).

    Canonical stage (no ``reference_frames`` in the inputs): the canonical Gaussians at t_c,
    a path from the reference camera to a perturbed freeze-time camera, frame 0 = I_c.

    Motion stage (the stage passes ``reference_frames`` / ``reference_times``): with
    ``time: sampled`` (default) a reference frame j is drawn uniformly, the whole path is
    rendered with w_t at t_j, starting at the reference camera of frame j, and frame 0 is
    the real reference frame I_j -- "with a fixed time step, we sample a continuous sequence
    of camera poses starting from the reference video's camera pose ... directly use the
    corresponding frame from the reference video as the conditional input" (§3.4), D.1's
    "randomly sample either a camera pose or a timestep". ``time: canonical`` pins it at
    t_c with I_c (the behaviour before; an ablation arm).
    """

    mode = "multiview"
    requires = ("render_video", "freeze_cameras", "canonical_view", "canonical_image", "reference_camera")

    def __init__(self, cfg: Optional[SDSMultiViewConfig] = None, prior: Any = None) -> None:
        super().__init__(cfg or SDSMultiViewConfig(), prior)

    def sample_time(self, inputs: Mapping[str, Any]) -> tuple[float, Cameras, torch.Tensor, Optional[int]]:
        """``(t, start camera, conditioning frame, reference frame index or None)``."""
        ref_frames = inputs.get("reference_frames")
        t_c = float(inputs.get("canonical_time", 0.0))
        if self.cfg.time == "canonical" or ref_frames is None:
            return t_c, inputs["reference_camera"][:1], inputs["canonical_image"], None
        T = int(ref_frames.shape[0])
        j = int(torch.randint(0, T, (1,), generator=inputs.get("rng")))
        times = inputs.get("reference_times")
        t = float(times[j]) if times is not None else (j / max(T - 1, 1))
        cams = inputs.get("reference_cameras")
        start = cams[j] if cams is not None else inputs["reference_camera"][:1]
        return t, start, ref_frames[j], j

    def sample_trajectory(self, inputs: Mapping[str, Any], start: Optional[Cameras] = None) -> tuple[Cameras, int]:
        """M cameras from ``start`` (default the reference camera) to a perturbed
        freeze-time camera P_k (k != c). Returns ``(cameras, k)``."""
        start = inputs["reference_camera"][:1] if start is None else start
        p_hat, k = self._perturbed_freeze_camera(inputs, self.cfg.perturb_radius)
        return interpolate_cameras(start, _at_size(p_hat, start), self.cfg.num_frames), k

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        skipped = self._skip(inputs)
        if skipped is not None:
            return skipped
        self._missing(inputs)
        t, start, known0, j = self.sample_time(inputs)
        traj, k = self.sample_trajectory(inputs, start)
        times = torch.full((len(traj),), t, device=traj.device)
        frames = inputs["render_video"](traj, times)
        prompt = self.cfg.prompt or str(inputs.get("freeze_prompt") or inputs.get("prompt", ""))
        return self._sds(frames, known0, traj, times, prompt, inputs, {"k": k, "reference_index": j})


class SDSTemporalLoss(_VideoSDS):
    """Temporal SDS (§3.4 item 1, D.1): a fixed camera -- the reference camera (default), or
    with ``camera: sampled`` a perturbed freeze-time camera (a departure from the paper) --
    and M times starting at the canonical time; frame 0, the condition, is the undeformed
    canonical render from that camera (detached); the loss is on frames 1..M-1."""

    mode = "temporal"
    requires = ("render_video", "canonical_image", "reference_camera")

    def __init__(self, cfg: Optional[SDSTemporalConfig] = None, prior: Any = None) -> None:
        super().__init__(cfg or SDSTemporalConfig(), prior)

    def sample_times(self, inputs: Mapping[str, Any], device=None) -> torch.Tensor:
        """``[M]`` times from the canonical time ``t_c`` in one direction (forward or backward,
        chosen with probability proportional to the room on that side; always forward when
        ``t_c = 0``, the paper's "time steps always start from 0"), spanning a random fraction
        in ``[min_time_span, max_time_span]`` of that room."""
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

    def sample_camera(self, inputs: Mapping[str, Any]) -> tuple[Cameras, Optional[int]]:
        """The fixed camera of the video: ``(camera, freeze-time index k or None)``."""
        if self.cfg.camera == "sampled":
            if "freeze_cameras" not in inputs:
                raise FourRealError("loss sds_temporal with camera: sampled needs inputs freeze_cameras that this "
                                    "stage does not provide")
            return self._perturbed_freeze_camera(inputs, self.cfg.perturb_radius)
        return inputs["reference_camera"][:1], None

    def __call__(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        skipped = self._skip(inputs)
        if skipped is not None:
            return skipped
        self._missing(inputs)
        cam, k = self.sample_camera(inputs)
        M = self.cfg.num_frames
        cams = _repeat(cam, M)
        times = self.sample_times(inputs, device=cam.device)
        frames = inputs["render_video"](cams, times)
        render_canonical = inputs.get("render_canonical")
        if render_canonical is not None:  # the undeformed canonical Gaussians (paper: "without any deformation")
            with torch.no_grad():
                known0 = render_canonical(cams[:1])[0]
        else:  # frame 0 is at t_c, where w_t is zero: the same image
            known0 = frames[0]
        prompt = self.cfg.prompt or str(inputs.get("prompt", ""))
        return self._sds(frames, known0.detach(), cams, times, prompt, inputs, {"k": k})
