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


# ------------------------------------------------------------------------ representation
class Representation(ABC):
    """The canonical Gaussians: parameters, optimisers, densification, PLY I/O.

    Stored parameters are unconstrained (log-scales, opacity logits); :meth:`params`
    returns them activated.
    """

    @abstractmethod
    def __len__(self) -> int:
        """Number of Gaussians N."""

    @abstractmethod
    def params(self) -> GaussianParams:
        """Activated parameters of all N Gaussians (differentiable views)."""

    @abstractmethod
    def save_ply(self, path: Path) -> None:
        """Write the standard 3DGS PLY layout (see docs/conventions.md)."""

    @abstractmethod
    def load_ply(self, path: Path) -> None:
        """Replace all parameters by those in a standard 3DGS PLY file."""

    @abstractmethod
    def state_dict(self) -> dict[str, "torch.Tensor"]:
        """Tensors to checkpoint (safetensors-compatible: flat name -> tensor)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, "torch.Tensor"]) -> None:
        """Restore from :meth:`state_dict` output."""


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
    """A deformation field w(x, t) or w(x, k).

    Implementations are ``torch.nn.Module`` subclasses too, so their weights save as
    safetensors through ``state_dict()``.
    """

    def setup(
        self,
        *,
        num_frames: Optional[int] = None,
        canonical_index: Optional[int] = None,
        canonical_means: Optional["torch.Tensor"] = None,
    ) -> None:
        """Called by a stage before training, with what only the data knows: the number of
        frames K (per-frame deformation), the canonical frame index c (whose deformation must
        be zero), and the canonical Gaussian positions ``[N,3]`` (e.g. to place LBS bones).
        The default does nothing."""

    @abstractmethod
    def deform(
        self, means: "torch.Tensor", time: "torch.Tensor | float | int", quats: Optional["torch.Tensor"] = None
    ) -> Deformation:
        """Offsets for canonical positions ``means`` ``[N,3]`` at ``time``.

        ``time`` is a float t in [0,1] for temporal deformation (w_t), or an int frame index k
        for per-frame deformation (w_mv), as the deformer's config says. ``quats`` ``[N,4]``
        (normalised canonical rotations, wxyz) lets deformers that rotate Gaussians (e.g.
        skinning) return the additive ``dq`` that composes their rotation with each Gaussian's.
        """


# ---------------------------------------------------------------------------------- loss
class Loss(ABC):
    """One term of the objective. The trainer multiplies it by its (possibly ramped) weight.

    ``inputs`` is a dict the stage fills; the names a loss reads are listed in
    :attr:`requires` so a stage can refuse a loss it cannot feed, with a clear message.
    Common keys: ``render`` (:class:`RenderOutput`), ``target`` ``[C,H,W,3]``,
    ``deformation`` (:class:`Deformation`), ``gaussians`` (:class:`GaussianParams`),
    ``step`` (int).
    """

    requires: tuple[str, ...] = ()

    @abstractmethod
    def __call__(self, inputs: Mapping[str, Any]) -> "torch.Tensor":
        """The unweighted scalar loss."""


# ----------------------------------------------------------------------------- scheduler
@dataclass
class Phase:
    """What is active at one iteration of a training stage."""

    name: str
    start: int
    end: int
    losses: tuple[str, ...] = ()
    param_groups: tuple[str, ...] = ()
    densify: bool = False
    options: dict = field(default_factory=dict)


class Scheduler(ABC):
    """Iteration -> phase, learning rates and loss weights."""

    @property
    @abstractmethod
    def total_steps(self) -> int:
        """Number of iterations of the stage (after ``iterations_scale``)."""

    @abstractmethod
    def phase_at(self, step: int) -> Phase:
        """The phase active at ``step`` (0-based)."""

    @abstractmethod
    def lr_at(self, group: str, step: int, base_lr: float) -> float:
        """Learning rate of parameter group ``group`` at ``step``."""

    def with_iterations_scale(self, scale: float) -> "Scheduler":
        """The same schedule with every iteration count multiplied by ``scale`` (the recipe's
        ``iterations_scale``). The default ignores it."""
        return self


# ---------------------------------------------------------------------------- video prior
class VideoPrior(ABC):
    """A video diffusion model: generation, masked conditioning, one-step x0 for SDS."""

    #: the prior's native frame count, height and width
    num_frames: int
    height: int
    width: int

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
        may take optional ``cameras`` (:class:`Cameras`, F, at the frames' size) and
        ``times`` (``[F]`` in [0,1]) keywords: where each frame was rendered from and when
        (SDS passes them to priors whose signature has them; camera-conditioned models use
        them, others need not declare them)."""

    def sds_size(self) -> tuple[int, int, int]:
        """``(height, width, multiple)``: the size SDS scores videos at -- renders are only
        ever downsampled to it and cut (never stretched) to its aspect -- and the multiple a
        smaller size must keep. Default: ``sds_height``/``sds_width`` when the prior has them,
        else its native ``height``/``width``; ``size_multiple`` or 1."""
        return (int(getattr(self, "sds_height", None) or self.height),
                int(getattr(self, "sds_width", None) or self.width),
                int(getattr(self, "size_multiple", 1) or 1))


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
    Earlier stages' outputs are found with ``ctx.find_output(name)`` / ``ctx.stage_dir(label)``;
    input files in the config are declared as ``InputPath`` so ``fourreal validate`` checks them.
    """

    @abstractmethod
    def run(self, ctx: "StageContext") -> None:
        """Do the work, writing outputs under ``ctx.out_dir``."""


Factory = Callable[[Any], Any]
