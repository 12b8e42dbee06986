"""Point-track supervision of the motion stage (after Shape of Motion's track loss, Wang et al. 2024).

The reference video's 2D point tracks (a ``tracker`` plugin: OpenCV, or an external tracker's
``.npz``) say where a point seen at one frame is at another. The loss at a training frame t:
render the canonical Gaussians from the reference camera at c with, as their "colour", each
Gaussian's image motion from c to t -- its projection at t after w_t has moved it, minus its
projection at c; alpha-composited (divided by the accumulated opacity) that is the expected
motion to t of what is seen at each pixel at c. At each track's pixel at c it must be the
track's motion:

    L_track = sum_q v_q |D_t(u_q(c)) - (u_q(t) - u_q(c))|_1 / (sum_q v_q * max(H, W))

with ``v_q`` the track's visibility at c and at t (and a covered pixel at c); and the same from
the previous frame (where the step already evaluates w_t, without autograd) to t, with the
tracks visible at both: points seen at c may have turned away by t (a rolling ball), tracks
queried at later frames still carry the subject on. Shape of Motion compares the composited
position at t with u_q(t); comparing motions instead removes the offset between a track's
sub-pixel point and what the pixel it falls in composites (up to a pixel, which no w_t can
remove). It is what a photometric loss cannot give once a subject has moved further than its
own size: a gradient toward where it went. The render's weights are detached (the tracks move
Gaussians, they do not reshape the frame), and so are the canonical positions: the loss
trains w_t only (the tracks say how things move, not where they are at c; measured on the
garden's ball it changes little either way, docs/benchmarks.md "Point tracks").
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from fourreal_core.interfaces import GaussianParams, Tracks


def choose_queries(frame: torch.Tensor, dynamic: Optional[torch.Tensor], n: int, c: int) -> torch.Tensor:
    """About ``n`` query points ``[Q,3]`` ``(c, x, y)`` on frame c ``[H,W,3]``: corners that a
    tracker can follow (``cv2.goodFeaturesToTrack``, Shi-Tomasi), half of them inside the
    reference video's moving region at c when there is one (``dynamic`` ``[H,W]`` bool), the
    rest anywhere."""
    import cv2

    g = (frame.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    g = cv2.cvtColor(g, cv2.COLOR_RGB2GRAY)
    pts = []
    n_dyn = n // 2 if dynamic is not None and bool(dynamic.any()) else 0
    if n_dyn:
        m = dynamic.cpu().numpy().astype(np.uint8) * 255
        p = cv2.goodFeaturesToTrack(g, maxCorners=n_dyn, qualityLevel=0.001, minDistance=1.5, mask=m)
        if p is not None:
            pts.append(p.reshape(-1, 2))
    p = cv2.goodFeaturesToTrack(g, maxCorners=n - sum(len(x) for x in pts), qualityLevel=0.001, minDistance=3)
    if p is not None:
        pts.append(p.reshape(-1, 2))
    xy = np.concatenate(pts) if pts else np.zeros((0, 2), np.float32)
    return torch.cat([torch.full((len(xy), 1), float(c)), torch.from_numpy(xy).float()], dim=1)


def save_tracks(path, tracks: Tracks, height: int, width: int) -> None:
    """Write ``tracks`` in the ``tracks_file`` layout (so a run's tracks can be looked at and reused)."""
    np.savez(path, tracks=tracks.tracks.cpu().numpy(), visible=tracks.visible.cpu().numpy(),
             queries=tracks.queries.cpu().numpy(), size=np.array([height, width]))


class TrackLoss:
    """The track loss for one reference video; see the module docstring.

    At a reference frame j it has up to two terms, each between a frame a whose Gaussians are
    known and j: a = c (the canonical Gaussians; tracks visible at c and j) and a = the
    previous frame the step already evaluates w_t at (``deformation_prev``, without autograd;
    tracks visible there and at j). The second carries the subject on when the points seen at
    c are no longer visible at j (a rolling ball turns its face away; a person turns round),
    provided there are tracks queried at later frames.

    Args:
        tracks: the reference video's tracks (T frames).
        c: the canonical frame index.
        ref_cams: the reference cameras (T), on the training device.
        rasterizer: the stage's rasterizer.
    """

    def __init__(self, tracks: Tracks, c: int, ref_cams, rasterizer) -> None:
        dev = ref_cams.viewmats.device
        self.c = c
        self.cams = ref_cams
        self.rasterizer = rasterizer
        self.H, self.W = int(ref_cams.height), int(ref_cams.width)
        self.uv = (tracks.tracks + 0.5).to(dev)  # [Q,T,2], rasterizer pixel centres at +0.5
        self.vis = tracks.visible.bool().to(dev)  # [Q,T]
        self.num = int(self.vis.any(dim=1).sum())

    def __len__(self) -> int:
        return self.num

    def term(self, ga: GaussianParams, a: int, means_b: torch.Tensor, b: int) -> Optional[torch.Tensor]:
        """Tracks visible at frames a and b: the Gaussians ``ga`` at a's time, rendered from
        camera a, carry their image motion to ``means_b`` (the same Gaussians at b's time) seen
        from camera b; at each track's pixel at a it must be the track's motion a -> b."""
        v = self.vis[:, a] & self.vis[:, b]
        if a == b or not bool(v.any()):
            return None
        uv_b, _ = self.cams[b].project(means_b)  # [1,N,2]
        with torch.no_grad():
            uv_a, _ = self.cams[a].project(ga.means)
        scale = float(max(self.H, self.W))
        disp = (uv_b[0] - uv_a[0]) / scale
        q = self.uv[v, a]
        px = q[:, 0].floor().long().clamp(0, self.W - 1)
        py = q[:, 1].floor().long().clamp(0, self.H - 1)
        pixel_weights = getattr(self.rasterizer, "pixel_weights", None)
        weights = pixel_weights(ga, self.cams[a], torch.stack([px, py], dim=1)) if pixel_weights else None
        if weights is not None:  # the render at the track pixels only (its geometry is detached)
            qi, gi, w = weights
            alpha = torch.zeros(len(q), dtype=disp.dtype, device=disp.device).index_add_(0, qi, w.to(disp.dtype))
            moved = torch.zeros(len(q), 2, dtype=disp.dtype, device=disp.device).index_add(
                0, qi, w.to(disp.dtype)[:, None] * disp.index_select(0, gi))
        else:  # a rasterizer without pixel weights: render the motion as a 2-channel image
            feat = torch.cat([disp, torch.zeros_like(disp[:, :1])], dim=1)
            geo = GaussianParams(ga.means.detach(), ga.quats.detach(), ga.scales.detach(), ga.opacities.detach(),
                                 feat, None)
            out = self.rasterizer.rasterize(geo, self.cams[a], background=torch.zeros(3, device=feat.device),
                                            render_depth=False)
            alpha, moved = out.alpha[0, py, px, 0], out.rgb[0, py, px, :2]
        ok = alpha.detach() > 0.5
        if not bool(ok.any()):
            return None
        pred = moved / alpha.clamp_min(1e-6)[:, None]  # expected motion / scale
        err = (pred - (self.uv[v, b] - q) / scale).abs().sum(-1)
        return (err * ok).sum() / ok.sum()

    def __call__(self, g0: GaussianParams, g: GaussianParams, j: int,
                 g_prev: Optional[GaussianParams] = None, prev: Optional[int] = None) -> Optional[torch.Tensor]:
        """The loss at reference frame ``j``: ``g0`` the canonical Gaussians, ``g`` the same
        moved to frame j's time, ``g_prev`` (optional) moved to frame ``prev``'s; None when no
        track links j to c or to ``prev``."""
        means_j = g.means - g0.means + g0.means.detach()  # w_t's offset carries the gradient, not x
        terms = [self.term(g0, self.c, means_j, j)]
        if g_prev is not None and prev is not None and prev != self.c:
            terms.append(self.term(g_prev, prev, means_j, j))
        terms = [t for t in terms if t is not None]
        return None if not terms else sum(terms) / len(terms)


@torch.no_grad()
def lift_tracks(tracks_uv: torch.Tensor, vis: torch.Tensor, c: int, cams, depth_c: torch.Tensor):
    """Tracks lifted to 3D with the rendered depth at c: ``(X [Q,3], disp [Q,T,3], ok [Q,T])``.

    ``tracks_uv`` ``[Q,T,2]`` (rasterizer pixel convention, centres at +0.5), ``vis`` ``[Q,T]``,
    ``cams`` the T reference cameras, ``depth_c`` ``[H,W]`` the expected depth rendered at c.
    A track seen at c is lifted there (``X``); at a frame t where it is seen it is read at the
    same camera-space depth (motion parallel to the image plane: one camera cannot see depth
    change), ``disp[q, t] = X_t - X``. Tracks not seen at c, or on a pixel with no depth, are
    not ``ok`` anywhere."""
    H, W = depth_c.shape
    Q, T = vis.shape
    uv_c = tracks_uv[:, c]
    px = uv_c[:, 0].floor().long().clamp(0, W - 1)
    py = uv_c[:, 1].floor().long().clamp(0, H - 1)
    z = depth_c[py, px]
    seen = vis[:, c] & (z > 0)

    def unproject(k: int, uv: torch.Tensor, zz: torch.Tensor) -> torch.Tensor:
        K, V = cams.Ks[k], cams.viewmats[k]
        xc = torch.stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * zz, (uv[:, 1] - K[1, 2]) / K[1, 1] * zz, zz], dim=1)
        return (xc - V[:3, 3]) @ V[:3, :3]  # R^T (x_cam - t)

    X = unproject(c, uv_c, z)
    disp = torch.zeros(Q, T, 3, device=tracks_uv.device)
    for k in range(T):
        disp[:, k] = unproject(k, tracks_uv[:, k], z) - X
    ok = vis & seen[:, None]
    return X, disp, ok


@torch.no_grad()
def gaussian_trajectories(means: torch.Tensor, X: torch.Tensor, disp: torch.Tensor, ok: torch.Tensor, c: int,
                          k: int = 8, return_near: bool = False, rigid: bool = False):
    """Each Gaussian's offset from c at every reference frame ``[N,T,3]``, from lifted tracks
    (:func:`lift_tracks`): the Gaussian-kernel mean of the offsets of its ``k`` nearest tracks
    (at c, in 3D; kernel width the tracks' median spacing to their 4th neighbour) among those seen at that
    frame -- so the hidden side of a subject moves with the side the tracks see. Frames where
    no nearby track is seen are interpolated linearly in time between frames that have one
    (held at the ends); a Gaussian far from every track (kernel weight < 1e-3) stays where it
    is (``return_near``: also the ``[N]`` mask of the others). Zero at c. (A translation per neighbourhood: a rigid one by PnP from the tracks
    was tried and is ill-posed on a small subject seen by one camera -- the pose's depth and
    rotation trade off.)

    ``rigid``: instead of the mean offset, the weighted rigid motion (Kabsch) that takes the
    neighbourhood's lifted tracks from c to the frame, applied to the Gaussian: offset
    ``R (x - mu_c) + mu_t - x``; a neighbourhood too flat to fix a rotation (second singular
    value under a tenth of the first) keeps the mean offset. Returns ``(D, Q)`` (and the mask
    with ``return_near``), ``Q [N,T,4]`` the rotations as wxyz quaternions (identity at c and
    where no rotation is fixed)."""
    N, T = means.shape[0], ok.shape[1]
    D = torch.zeros(N, T, 3, device=means.device)
    Q = torch.zeros(N, T, 4, device=means.device)
    Q[..., 0] = 1.0
    if len(X) == 0:
        out = (D, Q) if rigid else (D,)
        return (*out, torch.zeros(N, dtype=torch.bool, device=means.device)) if return_near else (out if rigid else D)
    k = min(k, len(X))
    # the kernel: the median distance from a track to its 4th nearest other track (not the
    # nearest: a point tracked from two query frames is lifted twice, at one place)
    nn_tracks = torch.cdist(X, X).topk(min(5, len(X)), largest=False).values[:, -1]
    sigma = float(nn_tracks.median().clamp_min(1e-6))
    valid = torch.zeros(N, T, dtype=torch.bool, device=means.device)
    wmax = torch.zeros(N, device=means.device)
    chunk = max(256, 2 ** 22 // max(1, k * T))  # [chunk,k,T,3] gathers stay ~50 MB whatever T
    for lo in range(0, N, chunk):
        x = means[lo:lo + chunk]
        dist, idx = torch.cdist(x, X).topk(k, largest=False)
        w = torch.exp(-0.5 * (dist / sigma) ** 2)  # [n,k]
        wmax[lo:lo + len(x)] = w.max(dim=1).values
        wv = w[:, :, None] * ok[idx].float()  # [n,k,T]
        den = wv.sum(1)  # [n,T]
        D[lo:lo + len(x)] = torch.einsum("nkt,nktc->ntc", wv, disp[idx]) / den.clamp_min(1e-12)[..., None]
        valid[lo:lo + len(x)] = den > 1e-3
        if rigid:
            D[lo:lo + len(x)], Q[lo:lo + len(x)] = _rigid_offsets(x, X[idx], disp[idx], wv, D[lo:lo + len(x)])
    valid[:, c] = True
    D[:, c] = 0.0
    # fill the frames with no seen neighbour: linear in time between the nearest valid frames
    t_idx = torch.arange(T, device=means.device).expand(N, T)
    prev = torch.where(valid, t_idx, torch.full_like(t_idx, -1)).cummax(dim=1).values
    nxt = torch.where(valid, t_idx, torch.full_like(t_idx, T)).flip(1).cummin(dim=1).values.flip(1)
    has_p, has_n = prev >= 0, nxt < T
    pc, nc = prev.clamp(0, T - 1), nxt.clamp(0, T - 1)
    Dp = D.gather(1, pc[..., None].expand(N, T, 3))
    Dn = D.gather(1, nc[..., None].expand(N, T, 3))
    a = ((t_idx - prev).float() / (nxt - prev).clamp_min(1).float())[..., None]
    fill = torch.where((has_p & has_n)[..., None], Dp + a * (Dn - Dp), torch.where(has_p[..., None], Dp, Dn))
    D = torch.where(valid[..., None], D, fill)
    D[wmax < 1e-3] = 0.0
    if not rigid:
        return (D, wmax >= 1e-3) if return_near else D
    Qp = Q.gather(1, pc[..., None].expand(N, T, 4))
    Qn = Q.gather(1, nc[..., None].expand(N, T, 4))
    Qn = torch.where(((Qp * Qn).sum(-1, keepdim=True) < 0), -Qn, Qn)  # the short way round
    qfill = torch.where((has_p & has_n)[..., None], Qp + a * (Qn - Qp), torch.where(has_p[..., None], Qp, Qn))
    Q = torch.nn.functional.normalize(torch.where(valid[..., None], Q, qfill), dim=-1)
    Q[:, c] = torch.tensor([1.0, 0.0, 0.0, 0.0], device=means.device)
    Q[wmax < 1e-3] = torch.tensor([1.0, 0.0, 0.0, 0.0], device=means.device)
    return (D, Q, wmax >= 1e-3) if return_near else (D, Q)


def _rigid_offsets(x: torch.Tensor, P: torch.Tensor, disp: torch.Tensor, w: torch.Tensor, mean_offset: torch.Tensor):
    """Per Gaussian ``x [n,3]`` and frame: the weighted Kabsch fit of its neighbour tracks ``P
    [n,k,3]`` (at c) to ``P + disp [n,k,T,3]`` with weights ``w [n,k,T]``; ``(offset [n,T,3],
    quaternion [n,T,4])``, the mean offset and identity where the fit is degenerate."""
    from fourreal_formats.quaternions import matrix_to_quat

    n, k, T = w.shape
    den = w.sum(1).clamp_min(1e-12)  # [n,T]
    Pt = P[:, :, None, :].expand(n, k, T, 3)
    Qt = Pt + disp
    mu_p = torch.einsum("nkt,nktc->ntc", w, Pt) / den[..., None]
    mu_q = torch.einsum("nkt,nktc->ntc", w, Qt) / den[..., None]
    a = Pt - mu_p[:, None]
    b = Qt - mu_q[:, None]
    H = torch.einsum("nkt,nkti,nktj->ntij", w, a, b)  # sum w a b^T
    U, S, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    d = torch.sign(torch.det(V @ U.transpose(-1, -2)))
    E = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = V @ E @ U.transpose(-1, -2)  # [n,T,3,3]: b ~ R a
    good = (S[..., 1] > 0.1 * S[..., 0]) & (S[..., 0] > 0)
    eye = torch.eye(3, device=x.device).expand_as(R)
    R = torch.where(good[..., None, None], R, eye)
    off = torch.einsum("ntij,ntj->nti", R, x[:, None, :] - mu_p) + mu_q - x[:, None, :]
    off = torch.where(good[..., None], off, mean_offset)
    return off, matrix_to_quat(R.reshape(-1, 3, 3)).reshape(n, T, 4)


class TrackDepthPrior:
    """Keeps the depth the track initialisation assumed, during the phases (``track_depth_weight``).

    The track loss is 2D: a Gaussian may slide along the reference camera's ray and still
    follow its track (one camera does not see depth), and on a fast subject the phases do
    (docs/benchmarks.md, "Track initialisation"). For the Gaussians near a lifted track, this
    term holds the camera-depth part of w_t's offset at the step's reference frame j to the
    tracks' (:func:`gaussian_trajectories`, read at constant depth), relative to the depth:

        L = mean_near (((w_t(x, t_j) - D_j(x)) . r_z) / z(x))^2

    ``r_z`` the reference camera's viewing axis at c. The targets are rebuilt when the number
    of Gaussians changes (growth)."""

    def __init__(self, X: torch.Tensor, disp: torch.Tensor, ok: torch.Tensor, c: int, viewmat: torch.Tensor,
                 targets: Optional[tuple] = None) -> None:
        self.X, self.disp, self.ok, self.c = X, disp, ok, c
        self.rz, self.tz = viewmat[2, :3], viewmat[2, 3]
        # (D, near) of :func:`gaussian_trajectories` for the Gaussians at hand, when already computed
        self.D, self.near = targets if targets is not None else (None, None)
        self._n = -1 if targets is None else len(self.D)

    def __call__(self, means0: torch.Tensor, dx: torch.Tensor, j: int) -> Optional[torch.Tensor]:
        if len(means0) != self._n:
            self.D, self.near = gaussian_trajectories(means0.detach(), self.X, self.disp, self.ok, self.c,
                                                      return_near=True)
            self._n = len(means0)
        if j == self.c or not bool(self.near.any()):
            return None
        z = (means0.detach() @ self.rz + self.tz).clamp_min(1e-3)
        err = ((dx - self.D[:, j]) @ self.rz) / z
        return err[self.near].square().mean()


@torch.no_grad()
def track_targets(fit, rigid: bool = False) -> tuple:
    """Every canonical Gaussian's offset at every reference frame from the lifted tracks
    (``D [N,T,3]``, :func:`gaussian_trajectories`) and which tracks were lifted (``[Q]``);
    sets ``fit.track_depth_prior`` (:class:`TrackDepthPrior`) on the same targets."""
    loss, c = fit.track_loss, fit.c
    g0 = fit.model.params()
    x, q = g0.means.detach(), g0.quats.detach()
    out = fit.rasterizer.rasterize(GaussianParams(x, q, g0.scales.detach(), g0.opacities.detach(),
                                                  g0.colors.detach(), g0.sh_degree),
                                   fit.ref_cams[c], background=torch.zeros(3, device=x.device), render_depth=True)
    X, disp, ok = lift_tracks(loss.uv, loss.vis, c, fit.ref_cams, out.depth[0, ..., 0])
    lifted = ok.any(dim=1)
    D, near = gaussian_trajectories(x, X[lifted], disp[lifted], ok[lifted], c, return_near=True)
    fit.track_depth_prior = TrackDepthPrior(X[lifted], disp[lifted], ok[lifted], c, fit.ref_cams.viewmats[c],
                                            targets=(D, near))
    if rigid:  # ``(D, Q, lifted)``: the rigid neighbourhood motions (the depth prior keeps the mean offsets)
        D, Q = gaussian_trajectories(x, X[lifted], disp[lifted], ok[lifted], c, rigid=True)
        return D, Q, lifted
    return D, lifted


def track_init(ctx, fit, steps: int, lr: float, rigid: bool = False) -> dict:
    """Initialise w_t from the tracks, before the stage's phases (Shape of Motion, MoSca,
    TrackerSplat: Gaussians moved from tracks before photometric optimisation).

    A photometric loss gives no gradient toward where a subject went once it moved further than
    its own size, and the track loss (sparse: one L1 term per track pixel) moves a smooth w_t
    only slowly (docs/benchmarks.md, "Point tracks"). So the reference tracks seen at c are
    lifted to 3D with the depth rendered at c (:func:`lift_tracks`), spread to every Gaussian
    by its nearest tracks (:func:`gaussian_trajectories`), and w_t is regressed onto those
    offsets -- a dense L2 target, ``steps`` Adam steps at ``lr``, one random reference frame per
    step -- before the phases refine it photometrically. The canonical Gaussians are not
    touched. Returns ``{"track_init_loss_first": ..., "track_init_loss_last": ...}``
    (the regression loss, means over the first and last tenth of the steps, in units of the
    tracked offsets' spread)."""
    w_t = fit.w_t
    g0 = fit.model.params()
    x, q = g0.means.detach(), g0.quats.detach()
    others = [j for j in range(fit.T) if j != fit.c]
    params = [p for p in w_t.parameters() if p.requires_grad]
    if not others or not params:
        return {}
    if rigid:  # the rotation of each neighbourhood too: w_t's dq regressed onto r * q - q
        from fourreal_formats.quaternions import quat_multiply

        D, Qr, lifted = track_targets(fit, rigid=True)
        q_all = q[:, None, :].expand_as(Qr)
        DQ = quat_multiply(Qr, q_all) - q_all  # [N,T,4]: q + dq = r q (the Deformation convention)
    else:
        D, lifted = track_targets(fit)
        DQ = None
    scale = float(D.norm(dim=-1).max().clamp_min(1e-6))
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(int(ctx.seed) * 1_000_003 + 29)
    hist: list[float] = []
    with ctx.progress(steps, "track init") as bar:
        for i in range(steps):
            j = others[int(torch.randint(0, len(others), (1,), generator=gen))]
            d = w_t.deform(x, float(fit.ref_times[j]), quats=q)
            total = ((d.dx - D[:, j]) / scale).square().sum(-1).mean()
            if DQ is not None:
                total = total + (d.dq - DQ[:, j]).square().sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            hist.append(float(total.detach()))
            bar.update(loss=hist[-1])
    # leave no gradient behind: the stage's first step would add it to its own (and a resumed
    # run at another step than the uninterrupted one: a resume must score what a straight run does)
    opt.zero_grad(set_to_none=True)
    k = max(1, steps // 10)
    res = {"track_init_tracks": int(lifted.sum()),
           "track_init_loss_first": round(sum(hist[:k]) / k, 6), "track_init_loss_last": round(sum(hist[-k:]) / k, 6)}
    ctx.log("track_init", stage=ctx.name, steps=steps, **res)
    return res


def query_frames(T: int, c: int, n: int) -> list[int]:
    """``n`` frames spread over ``T`` that include c (c first)."""
    n = max(1, min(int(n), T))
    spread = [int(round(k * (T - 1) / max(n - 1, 1))) for k in range(n)] if n > 1 else []
    out = [c] + [f for f in spread if f != c]
    return list(dict.fromkeys(out))[:n]


def build_track_loss(ctx, cfg, ref, c: int, dynamic: Optional[torch.Tensor], ref_cams, rasterizer, out_dir):
    """The motion stage's :class:`TrackLoss` from ``cfg.tracker`` (None when it is unset):
    tracks the reference video from ``cfg.track_points`` query points at c and at
    ``cfg.track_query_frames - 1`` other frames spread over the video, writes them to
    ``tracks.npz`` in the stage folder and logs how many are usable."""
    if cfg.tracker is None:
        return None
    tracker = cfg.tracker.build(ctx.registry)
    frames = ref.video.frames
    fs = query_frames(len(frames), c, cfg.track_query_frames)
    per = max(1, int(cfg.track_points) // len(fs))
    queries = torch.cat([choose_queries(frames[f], None if dynamic is None else dynamic[f], per, f) for f in fs])
    tracks = tracker.track(frames, queries)
    save_tracks(out_dir / "tracks.npz", tracks, frames.shape[1], frames.shape[2])
    loss = TrackLoss(tracks, c, ref_cams, rasterizer)
    ctx.log("tracks", stage=ctx.name, tracker=cfg.tracker.name, tracks=len(tracks),
            at_canonical=int(tracks.visible[:, c].sum()), visible=round(float(tracks.visible.float().mean()), 3))
    if len(loss) == 0:
        ctx.notice(f"{cfg.tracker.source or 'tracker'}: no track is visible in any frame; the track loss is off")
        return None
    return loss
