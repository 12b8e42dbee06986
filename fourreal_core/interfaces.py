"""One abstract class per kind of plugin.

A plugin registers a *factory* for one of these kinds (see :mod:`fourreal_core.registry`);
the factory receives the component's validated config dataclass and returns an instance
of the matching class below. Shapes and units are documented on every method; ``N`` is
the number of Gaussians, ``C`` the number of cameras, ``H``/``W`` the image size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

if TYPE_CHECKING:
    import torch

    from .run import StageContext
    from .types import Cameras, PointCloud, PosedVideo, Video

#: The kinds of plugin, in the order `fourreal plugins` lists them.
KINDS = (
    "stage",
    "video_prior",
    "pose_estimator",
    "representation",
    "rasterizer",
    "deformer",
    "tracker",
    "capture",
    "loss",
    "scheduler",
)


# --------------------------------------------------------------------------- rendering
@dataclass
class GaussianParams:
    """Activated Gaussian parameters, ready to rasterize.

    Attributes:
        means: ``[N,3]`` world positions.
        quats: ``[N,4]`` rotations, ``wxyz`` (need not be normalised; rasterizers normalise).
        scales: ``[N,3]`` standard deviations along the local axes, world units (not log).
        opacities: ``[N]`` in (0,1) (not logits).
        colors: ``[N,K,3]`` spherical-harmonics coefficients with ``K=(sh_degree+1)**2``,
            or ``[N,3]`` plain RGB in [0,1] when ``sh_degree`` is None.
        sh_degree: the SH degree to evaluate, or None for plain RGB.
    """

    means: "torch.Tensor"
    quats: "torch.Tensor"
    scales: "torch.Tensor"
    opacities: "torch.Tensor"
    colors: "torch.Tensor"
    sh_degree: Optional[int] = None

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def deformed(self, d: "Deformation") -> "GaussianParams":
        """The Gaussians moved by a deformation (paper Eq. 1): x + dx, q + dq, s * exp(ds)."""
        import torch

        scales = self.scales if d.ds is None else self.scales * torch.exp(d.ds)
        return GaussianParams(
            means=self.means + d.dx,
            quats=self.quats + d.dq,
            scales=scales,
            opacities=self.opacities,
            colors=self.colors,
            sh_degree=self.sh_degree,
        )

    def subset(self, index: "torch.Tensor") -> "GaussianParams":
        """Gaussians selected by a bool mask or index tensor ``[N]``."""
        return GaussianParams(
            self.means[index], self.quats[index], self.scales[index], self.opacities[index],
            self.colors[index], self.sh_degree,
        )


@dataclass
class RenderOutput:
    """What a rasterizer returns for C cameras.

    Attributes:
        rgb: ``[C,H,W,3]`` composited colour including the background.
        alpha: ``[C,H,W,1]`` accumulated opacity in [0,1].
        depth: ``[C,H,W,1]`` expected camera-space z (sum w_i z_i / alpha; 0 where alpha=0),
            or None when not requested.
        means2d: ``[C,N,2]`` projected centres in pixels. It requires grad and retains it, so
            after ``backward()`` ``means2d.grad`` holds the view-space positional gradient
            that densification accumulates.
        radii: ``[C,N]`` int32 screen-space radius in pixels (3 sigma); 0 for culled Gaussians.
    """

    rgb: "torch.Tensor"
    alpha: "torch.Tensor"
    depth: Optional["torch.Tensor"]
    means2d: "torch.Tensor"
    radii: "torch.Tensor"
    extras: dict = field(default_factory=dict)


class Rasterizer(ABC):
    """Gaussians + cameras -> images (differentiable)."""

    @abstractmethod
    def rasterize(
        self,
        gaussians: GaussianParams,
        cameras: "Cameras",
        background: Optional["torch.Tensor"] = None,
        render_depth: bool = True,
    ) -> RenderOutput:
        """Render ``gaussians`` from every camera.

        Args:
            gaussians: N activated Gaussians (see :class:`GaussianParams`).
            cameras: C cameras; all outputs are batched over them.
            background: ``[3]`` or ``[C,3]`` colour in [0,1] composited behind; black if None.
            render_depth: also return the expected depth.
        """

    def pixel_weights(self, gaussians: GaussianParams, camera: "Cameras", pixels: "torch.Tensor"):
        """Optional: the compositing weights of :meth:`rasterize` at a few pixels of one camera.

        A render of per-Gaussian features ``f`` at pixel ``q`` is ``sum_n w[q,n] f_n`` plus the
        transmittance times the background. Losses that read a render at a few hundred pixels
        (the track loss) use these weights instead of rendering the whole image.

        Args:
            gaussians: N activated Gaussians. camera: one camera (``Cameras`` of 1).
            pixels: ``[Q,2]`` integer (column, row) indices inside the image.

        Returns:
            ``(query [M], gaussian [M], weight [M])`` (the non-zero ``w[q,n]``, no gradient), or
            None when the rasterizer does not offer them (the default); callers then render.
        """
        return None


# ------------------------------------------------------------------------ representation
class DensifyStrategy(ABC):
    """Adaptive density control in the style of gsplat's strategies: the strategy object
    holds only its (already ``iterations_scale``-d) config; the running statistics live in a
    plain ``state`` dict of flat tensors that the fitting engine owns and checkpoints.

    The engine calls, every step: :meth:`step_pre` before rendering, then ``backward()``,
    then :meth:`step_post_backward` (before the optimiser steps). Each returns True when it
    changed the set of Gaussians (rows added or removed), so kNN and other per-set caches
    are recomputed.
    """

    @abstractmethod
    def initialize_state(self, n: int, device: Any = "cpu") -> dict[str, "torch.Tensor"]:
        """Fresh statistics for ``n`` Gaussians."""

    def step_pre(self, model: "Representation", state: dict, step: int) -> bool:
        """Called before the render of ``step`` (e.g. to spawn or freeze). Default: nothing."""
        return False

    @abstractmethod
    def step_post_backward(self, model: "Representation", state: dict, render: "RenderOutput", step: int) -> bool:
        """Accumulate statistics from ``render`` (its loss back-propagated) and, on schedule,
        clone / split / prune. Returns whether the Gaussian set changed."""

    def step_end(self, model: "Representation", state: dict) -> None:
        """Called once after the last step (e.g. to unfreeze). Default: nothing."""

    def state_dict(self, state: dict) -> dict[str, "torch.Tensor"]:
        """Flat tensors to checkpoint (default: ``state`` itself)."""
        return {k: v.detach().clone() for k, v in state.items()}

    def load_state_dict(self, state: dict, saved: Mapping[str, "torch.Tensor"]) -> None:
        """Restore :meth:`state_dict` output into ``state``."""
        state.update({k: v.detach().clone() for k, v in saved.items()})


class Representation(ABC):
    """The canonical Gaussians: parameters, their optimiser, densification, PLY I/O.

    Stored parameters are unconstrained (log-scales, opacity logits); :meth:`params`
    returns them activated. Everything the fitting engine calls is
    declared here; optional parts raise ``NotImplementedError`` with a message, and the
    engine only calls them when a recipe asks for what needs them (densify, growth, freeze).
    """

    #: the scene radius learning rates and densification thresholds scale with
    scene_extent: float = 1.0

    @abstractmethod
    def __len__(self) -> int:
        """Number of Gaussians N."""

    @abstractmethod
    def params(self, step: Optional[int] = None) -> GaussianParams:
        """Activated parameters of all N Gaussians (differentiable views). ``step`` lets the
        representation follow its own schedule (e.g. the active SH degree)."""

    @abstractmethod
    def init_from_points(self, points: "PointCloud", scene_extent: float) -> None:
        """One Gaussian per point (colours from the points), sized from their spacing."""

    @abstractmethod
    def to(self, device: Any) -> "Representation":
        """Move everything (parameters, optimiser state) to ``device``; returns self."""

    # --- optimisation (the representation owns its optimiser: per-attribute learning rates)
    @abstractmethod
    def update_learning_rate(self, step: int, total_steps: int) -> None:
        """Set this step's learning rates (e.g. 3DGS's exponential decay of positions)."""

    @abstractmethod
    def optimizer_step(self, groups: Optional[Any] = None) -> None:
        """One optimiser step over the accumulated gradients, then zero them. Frozen
        Gaussians (:meth:`freeze`) never move."""

    @abstractmethod
    def zero_grad(self) -> None:
        """Drop accumulated gradients without stepping."""

    def freeze(self, mask: Optional["torch.Tensor"] = None) -> None:
        """Exclude ``mask`` rows (default: all current Gaussians) from optimisation and
        densification (the motion stage's growth phase, paper D.2)."""
        raise NotImplementedError(f"{type(self).__name__} cannot freeze Gaussians (needed by a growth phase)")

    def unfreeze(self) -> None:
        """Make every Gaussian trainable again."""
        raise NotImplementedError(f"{type(self).__name__} cannot freeze Gaussians (needed by a growth phase)")

    def densify_strategy(self) -> DensifyStrategy:
        """The representation's adaptive density control (3DGS: clone / split / prune /
        opacity reset) with its config's (scaled) schedule, for phases with ``densify: true``."""
        raise NotImplementedError(f"{type(self).__name__} has no densification strategy")

    def growth_strategy(self, start: int, end: int, grad_threshold: float, prune_opacity: float,
                        **kw: Any) -> DensifyStrategy:
        """The motion stage's growth (paper D.2) over steps ``[start, end)``: statistics
        accumulate before ``start``; at ``start`` the Gaussians freeze and new ones spawn
        where the gradients are high; only those grow (clone / split / prune with
        ``prune_opacity`` = tau_alpha) until ``end``, when everything unfreezes. The stage
        passes ``max_gaussians=`` (a total the growth may not exceed) only when its
        ``growth_budget`` is set."""
        raise NotImplementedError(f"{type(self).__name__} has no growth strategy (motion-stage growth phase)")

    # --- files and checkpoints
    @abstractmethod
    def save_ply(self, path: Path) -> None:
        """Write the standard 3DGS PLY layout (see docs/conventions.md)."""

    @abstractmethod
    def load_ply(self, path: Path) -> None:
        """Replace all parameters by those in a standard 3DGS PLY file (the active SH degree
        becomes the file's)."""

    @abstractmethod
    def state_dict(self) -> dict[str, "torch.Tensor"]:
        """Tensors to checkpoint (safetensors-compatible: flat name -> tensor)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, "torch.Tensor"]) -> None:
        """Restore from :meth:`state_dict` output."""

    def optimizer_state_dict(self) -> dict[str, "torch.Tensor"]:
        """The optimiser's state as flat tensors (default: none, i.e. not resumable exactly)."""
        return {}

    def load_optimizer_state_dict(self, state: Mapping[str, "torch.Tensor"]) -> None:
        """Restore :meth:`optimizer_state_dict` output (after :meth:`load_state_dict`)."""


def log_linear_decay(step: int, total: int, v0: float, v1: float) -> float:
    """Log-linear interpolation from ``v0`` at step 0 to ``v1`` at step ``total`` and after
    (3DGS's learning-rate decay); ``v0`` when ``total``, ``v0`` or ``v1`` is not positive.
    The one decay of the project: deformers, the Gaussians' positions and the cameras use it."""
    import math

    if total <= 0 or v0 <= 0 or v1 <= 0:
        return v0
    f = min(max(step / total, 0.0), 1.0)
    return math.exp(math.log(v0) * (1 - f) + math.log(v1) * f)


# ------------------------------------------------------------------------------ deformer
@dataclass
class Deformation:
    """Offsets of each Gaussian from the canonical frame (paper Eq. 1).

    Attributes:
        dx: ``[N,3]`` position offset, world units (x_t = x + dx).
        dq: ``[N,4]`` rotation offset, ``wxyz``, added to the quaternion (q_t = q + dq).
        ds: ``[N,3]`` log-scale offset, or None when the deformer does not model scale.
    """

    dx: "torch.Tensor"
    dq: "torch.Tensor"
    ds: Optional["torch.Tensor"] = None


class Deformer(ABC):
    """A deformation field: w_mv(x, k) over the K frames of the freeze-time video (canonical
    stage) or w_t(x, t) over time t in [0,1] (motion stage). A ``torch.nn.Module`` whose
    :meth:`deform` is **exactly zero at the canonical input** given to :meth:`setup` (paper
    §3.3); the whole contract, which the fitting engine checks when it sets a deformer up, is
    docs/plugins.md, "Deformers".
    """

    lr: float = 1e-3
    lr_final: float = 1e-5
    #: ``deform`` takes a frame index k (w_mv) rather than a time t (w_t)
    frame_mode: bool = False

    def setup(
        self,
        *,
        num_frames: Optional[int] = None,
        canonical: "int | float | None" = None,
        canonical_means: Optional["torch.Tensor"] = None,
    ) -> None:
        """Called by a stage before training, with what only the data knows: the number of
        frames K (per-frame deformation), ``canonical`` -- the input at which the deformation
        must be exactly zero: an int frame index for per-frame deformers (w_mv: the canonical
        view k_c, the freeze-time frame showing the canonical frame c), a float time for
        temporal ones (w_t: the canonical time t_c) -- and the canonical Gaussian positions
        ``[N,3]`` (e.g. to place LBS bones). The default does nothing (right for a deformer
        that is zero at its canonical input by construction)."""

    @abstractmethod
    def deform(
        self, means: "torch.Tensor", time: "torch.Tensor | float | int", quats: Optional["torch.Tensor"] = None
    ) -> Deformation:
        """Offsets for canonical positions ``means`` ``[N,3]`` at ``time``.

        ``time`` is a float t in [0,1] for temporal deformation (w_t), or an int frame index k
        for per-frame deformation (w_mv), as the deformer's config says. ``quats`` ``[N,4]``
        (normalised canonical rotations, wxyz) lets deformers that rotate Gaussians (e.g.
        skinning) return the additive ``dq`` that composes their rotation with each Gaussian's.
        Exactly zero at the canonical input of :meth:`setup`.
        """

    def deform_pair(self, means: "torch.Tensor", t: float, t_prev: float,
                    quats: Optional["torch.Tensor"] = None) -> "tuple[Deformation, Deformation]":
        """``(w(x, t), w(x, t_prev))`` for the temporal regularisers; the second without
        autograd (the previous state is a fixed reference). A deformer that can share work
        between the two (the ``mlp``) overrides it."""
        import torch

        d = self.deform(means, t, quats=quats)
        with torch.no_grad():
            dp = self.deform(means, t_prev, quats=quats)
        return d, dp

    def learning_rate(self, step: int, total: int) -> float:
        """The learning rate at ``step`` of ``total``: log-linear from :attr:`lr` to
        :attr:`lr_final` (3DGS style)."""
        return log_linear_decay(step, total, float(self.lr), float(self.lr_final))


# ------------------------------------------------------------------------------- tracker
@dataclass
class Tracks:
    """2D point tracks over a video of T frames.

    Attributes:
        queries: ``[Q,3]`` float ``(frame index, x, y)``: where each track starts (is queried).
        tracks: ``[Q,T,2]`` float ``(x, y)`` pixel positions in every frame. Pixel
            coordinates as OpenCV, CoTracker and TAPIR give them: the centre of the top-left
            pixel is ``(0, 0)`` (the rasterizers' pixel centres are at ``+0.5``).
        visible: ``[Q,T]`` bool: the point is seen (not occluded, inside the frame) there.
            Where it is False the position is the tracker's guess or anything finite.
    """

    queries: "torch.Tensor"
    tracks: "torch.Tensor"
    visible: "torch.Tensor"

    def __len__(self) -> int:
        return int(self.tracks.shape[0])


class Tracker(ABC):
    """Frames -> 2D point tracks (the motion stage's track supervision)."""

    @abstractmethod
    def track(self, frames: "torch.Tensor", queries: Optional["torch.Tensor"] = None) -> Tracks:
        """Track points through a video.

        Args:
            frames: ``[T,H,W,3]`` float RGB in [0,1].
            queries: ``[Q,3]`` ``(frame index, x, y)`` points to track (pixels, centre of the
                top-left pixel at ``(0, 0)``); None lets the tracker choose (a tracker that
                reads tracks from a file returns the file's).

        Returns:
            :class:`Tracks` with ``tracks [Q,T,2]`` and ``visible [Q,T]``; the query frame's
            position of every track is its query point.
        """


# ------------------------------------------------------------------------------- capture
class CaptureReader(ABC):
    """A layout of inputs on disk (docs/plugins.md, "Capture layouts"): synchronized
    multi-camera captures, whose :meth:`read` returns the ``multicam`` stage's ``Capture``, or,
    with :attr:`single_video`, one camera's footage (a video file, a frame folder, posed
    images), whose :meth:`read` returns the poses stage's ``SingleVideo``."""

    #: True: a layout of one camera's footage (the poses stage's inputs); False: of
    #: synchronized multi-camera captures (the multicam stage's). Each stage asks only its own.
    single_video: bool = False

    @abstractmethod
    def claims(self, path: "Path") -> bool:
        """Whether ``path`` (a folder or file) is in this layout -- cheap: look at file names."""

    @abstractmethod
    def read(self, path: "Path") -> Any:
        """The input at ``path``: cameras, calibration per time, frames (lazily), masks and
        points -- or, for a single video, its frames and the cameras when it carries them; a
        bad file raises :class:`~fourreal_core.errors.InputError` naming it."""


# ---------------------------------------------------------------------------------- loss
class Loss(ABC):
    """One term of the objective. The engine multiplies it by its (possibly ramped) weight.

    ``inputs`` is a dict the stage fills; the names a loss reads are listed in
    :attr:`requires`: the fitting engine refuses, with a clear message, a loss that needs an
    input its stage never provides, and skips it on steps where an input is absent (e.g. a
    regulariser of the deformation in a phase with ``deform: false``).
    Common keys: ``render`` (:class:`RenderOutput`), ``target`` ``[C,H,W,3]``,
    ``deformation`` (:class:`Deformation`), ``gaussians`` (:class:`GaussianParams`),
    ``step`` (int).
    """

    requires: tuple[str, ...] = ()
    #: ``weight.at(step)`` multiplies the loss (a :class:`~fourreal_core.config.Ramp`); 1 if absent
    weight: Any = None

    @abstractmethod
    def __call__(self, inputs: Mapping[str, Any]) -> "torch.Tensor":
        """The unweighted scalar loss."""


# ----------------------------------------------------------------------------- scheduler
@dataclass
class Phase:
    """What is active at one iteration of a training stage: its losses, the parameter groups
    it trains, ``densify`` (3DGS densification), ``grow`` (growth of new Gaussians, the motion
    stage's), ``deform`` (apply the stage's deformation field), ``frames`` (``all`` /
    ``reference`` / ``freeze_time``: which training frames to sample) and ``downscale``
    (render and supervise at 1/downscale of the frames' size)."""

    name: str
    start: int
    end: int
    losses: tuple[str, ...] = ()
    param_groups: tuple[str, ...] = ()
    densify: bool = False
    deform: bool = True
    frames: str = "all"
    downscale: int = 1
    grow: bool = False


class Scheduler(ABC):
    """Iteration -> phase and learning rates. Built from a config whose step counts are
    already multiplied by ``iterations_scale`` (see :func:`fourreal_core.config.scale_steps`)."""

    @property
    @abstractmethod
    def phases(self) -> list[Phase]:
        """Every phase, in order, with absolute ``[start, end)`` steps."""

    @property
    def total_steps(self) -> int:
        """Number of iterations of the stage."""
        return self.phases[-1].end if self.phases else 0

    def phase_at(self, step: int) -> Phase:
        """The phase active at ``step`` (0-based; the last one past the end)."""
        for p in self.phases:
            if p.start <= step < p.end:
                return p
        return self.phases[-1]

    def phase_named(self, name: str) -> Optional[Phase]:
        """The phase called ``name``, or None."""
        return next((p for p in self.phases if p.name == name), None)


# ---------------------------------------------------------------------------- video prior
class VideoPrior(ABC):
    """A video diffusion model: generation, masked conditioning, one-step x0 for SDS.

    Optional abilities are declared here with defaults, never probed: a prior overrides
    what it has (``conditions``, ``context_at_start``, ``use``, ``to``, ``device``,
    ``loras``, ``sds_size``)."""

    #: the prior's native frame count, height and width
    num_frames: int
    height: int
    width: int
    #: what :meth:`predict_x0` conditions on beyond the frames: ``"cameras"`` and/or
    #: ``"times"`` -- SDS passes exactly these keywords (default: neither)
    conditions: frozenset = frozenset()
    #: the prior holds known frames firmly only at the start of a window (freeze-time
    #: generation then runs backward windows reversed)
    context_at_start: bool = False
    #: the device the prior runs on when it places itself (None: it does not say)
    device: Any = None
    #: the LoRAs it applies (described in a generate stage's generation.json), or None
    loras: Any = None

    def use(self, what: str) -> Any:
        """A context manager activating what the prior has for ``what`` (a LoRA use:
        ``freeze_time``, ``sds_multiview``...); default: nothing to activate."""
        import contextlib

        return contextlib.nullcontext(self)

    def to(self, device: Any) -> "VideoPrior":
        """Move to ``device`` (default: stays where it is)."""
        return self

    @abstractmethod
    def generate(
        self,
        prompt: str,
        num_frames: int,
        height: int,
        width: int,
        known_frames: Optional[Mapping[int, "torch.Tensor"]] = None,
        seed: int = 0,
    ) -> "Video":
        """Sample a video. ``known_frames`` maps frame index -> ``[H,W,3]`` image in [0,1]
        that the output must reproduce at that index (first frame, last 8, every k-th...)."""

    @abstractmethod
    def predict_x0(
        self,
        noisy: "torch.Tensor",
        noise_level: "torch.Tensor | float",
        known_frames: Optional[Mapping[int, "torch.Tensor"]] = None,
        prompt: str = "",
        *,
        cameras: Optional["Cameras"] = None,
        times: Optional["torch.Tensor"] = None,
    ) -> "torch.Tensor":
        """One-step denoised estimate x0 ``[F,H,W,3]`` for SDS.

        ``noisy`` holds the *clean* rendered frames ``[F,H,W,3]`` in [0,1] at the prior's
        SDS size (:meth:`sds_size`); the prior adds noise at ``noise_level`` (a diffusion
        time in (0,1), in its own parameterisation -- flow-matching sigma, or a DDPM timestep
        fraction -- as it documents), encoding and decoding inside for latent priors,
        conditions on ``known_frames`` and ``prompt``, and returns its x0 prediction.
        Implementations take an optional ``generator`` keyword for reproducible noise, and
        the ``cameras`` (:class:`Cameras`, F, at the frames' size) and ``times`` (``[F]`` in
        [0,1]) keywords -- where each frame was rendered from and when -- which SDS passes
        only when :attr:`conditions` names them."""

    def sds_size(self) -> tuple[int, int, int]:
        """``(height, width, multiple)``: the size SDS scores videos at -- renders are only
        ever downsampled to it and cut (never stretched) to its aspect -- and the multiple a
        smaller size must keep. Default: ``sds_height``/``sds_width`` when the prior has them,
        else its native ``height``/``width``; ``size_multiple`` or 1."""
        return (int(getattr(self, "sds_height", None) or self.height),
                int(getattr(self, "sds_width", None) or self.width),
                int(getattr(self, "size_multiple", 1) or 1))  # config-style attributes a prior may set


# ------------------------------------------------------------------------- pose estimator
@dataclass
class PoseResult:
    """Cameras for every input video (in one shared world frame) + sparse points."""

    videos: list["PosedVideo"]
    points: Optional["PointCloud"] = None
    report: dict = field(default_factory=dict)


class PoseEstimator(ABC):
    """Frames -> cameras (+ sparse points)."""

    @abstractmethod
    def estimate(self, videos: list["Video"], names: list[str]) -> PoseResult:
        """Estimate one camera per frame for all ``videos`` in one world frame.

        ``names`` label the videos in messages (e.g. their file names).
        """


# --------------------------------------------------------------------------------- stage
class Stage(ABC):
    """One step of a run (generate, poses, canonical, motion, export...).

    A stage writes everything it produces into ``ctx.out_dir``; the runner moves that
    folder into place atomically when :meth:`run` returns, so a stage is either complete
    or absent. Long stages checkpoint through ``ctx.checkpoints`` to resume mid-stage.
    Earlier stages' outputs are found with ``ctx.find_output(name)``;
    input files in the config are declared as ``InputPath`` so ``fourreal validate`` checks them.
    The files it passes to and takes from other stages are declared below (docs/plugins.md,
    "Stages and the files they pass on").
    """

    #: files it looks up in earlier stages' folders (``ctx.find_output``), relative to them
    reads: tuple[str, ...] = ()
    #: files (or globs) it always writes into ``ctx.out_dir``: the runner refuses to publish
    #: the stage when one is missing, and ``find_output`` prefers the newest earlier stage
    #: declaring a file (in ``writes`` or ``may_write``) over one that merely holds it
    writes: tuple[str, ...] = ()
    #: files (or globs) it writes only sometimes (held-out views, points when it has some)
    may_write: tuple[str, ...] = ()

    @abstractmethod
    def run(self, ctx: "StageContext") -> None:
        """Do the work, writing outputs under ``ctx.out_dir``."""


Factory = Callable[[Any], Any]
