"""Classical point tracking with OpenCV: block matching (``cv2.matchTemplate``) refined by
Lucas-Kanade (``calcOpticalFlowPyrLK``), plain pyramidal LK, or dense DIS flow
(``DISOpticalFlow``), chained frame to frame from each query frame forwards and backwards,
with a forward-backward check and re-seeding of lost points.

OpenCV's implementations are used as they are (well kept, fast on a CPU); what is written here
is only the chaining (one step per neighbouring frame pair, each starting from where the
point's last velocity predicts it), the forward-backward check (the point followed back one
frame must land within ``fb_threshold`` px of where it started -- Kalal et al. 2010) and the
re-seeding: a point that fails the check moves on at its last velocity and is tracked again
from there (visible again once the check passes), so one bad step does not end a long track.
Which method is the default was chosen by measured track error on the procedural garden
(docs/benchmarks.md, "Point tracks").
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from fourreal_core.interfaces import Tracker, Tracks

from .configs import OpenCVTrackerConfig


def _gray(frames: torch.Tensor, upscale: int) -> list[np.ndarray]:
    import cv2

    x = (frames.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
    out = []
    for f in x:
        g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        if upscale > 1:
            g = cv2.resize(g, (g.shape[1] * upscale, g.shape[0] * upscale), interpolation=cv2.INTER_CUBIC)
        out.append(g)
    return out


def _block_match(ga: np.ndarray, gb: np.ndarray, pts: np.ndarray, guess: np.ndarray, r: int, search: int) -> np.ndarray:
    """For each point of ``ga``, the integer offset of the best normalised cross-correlation
    (``cv2.matchTemplate``, ``TM_CCOEFF_NORMED``) of its ``(2r+1)^2`` patch in ``gb`` within
    ``search`` px of ``guess``: a long jump that Lucas-Kanade then refines. A subject that moves
    about its own size per frame is beyond the reach of a pyramid (at the coarse levels it is
    a pixel or two); matching around a constant-velocity guess is not."""
    import cv2

    pad = r + search + 2
    A = cv2.copyMakeBorder(ga, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    B = cv2.copyMakeBorder(gb, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    h, w = ga.shape
    out = guess.copy()
    for i in range(len(pts)):
        if not (np.isfinite(pts[i]).all() and np.isfinite(guess[i]).all()):
            continue
        x, y = int(round(float(np.clip(pts[i, 0], 0, w - 1)))) + pad, int(round(float(np.clip(pts[i, 1], 0, h - 1)))) + pad
        gx = int(round(float(np.clip(guess[i, 0], 0, w - 1)))) + pad
        gy = int(round(float(np.clip(guess[i, 1], 0, h - 1)))) + pad
        tpl = A[y - r:y + r + 1, x - r:x + r + 1]
        win = B[gy - r - search:gy + r + search + 1, gx - r - search:gx + r + search + 1]
        if tpl.std() < 1e-6:
            continue  # a flat patch: nothing to match; keep the guess
        res = cv2.matchTemplate(win, tpl, cv2.TM_CCOEFF_NORMED)
        _, _, _, loc = cv2.minMaxLoc(res)
        out[i] = (pts[i, 0] + (gx - x) + loc[0] - search, pts[i, 1] + (gy - y) + loc[1] - search)
    return out


def _sample_flow(flow: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a dense flow ``[H,W,2]`` at points ``[P,2]`` (pixel centres at
    integers; clamped to the image)."""
    import cv2

    h, w = flow.shape[:2]
    mx = np.clip(pts[:, 0], 0, w - 1).astype(np.float32).reshape(-1, 1)
    my = np.clip(pts[:, 1], 0, h - 1).astype(np.float32).reshape(-1, 1)
    out = cv2.remap(flow, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, 2)


class OpenCVTracker(Tracker):
    """See :class:`~fourreal_trackers.configs.OpenCVTrackerConfig`."""

    def __init__(self, cfg: Optional[OpenCVTrackerConfig] = None) -> None:
        self.cfg = cfg or OpenCVTrackerConfig()
        if self.cfg.upscale < 1:
            raise ValueError(f"upscale must be an integer >= 1, got {self.cfg.upscale}")
        self._flows: dict = {}

    # -------------------------------------------------------------------- one step
    def _lk(self, ga, gb, pts: np.ndarray, guess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points ``[P,2]`` of ``ga`` -> their positions in ``gb`` and OpenCV's status, by
        block matching around ``guess`` (``search`` > 0) then Lucas-Kanade refinement, or by
        pyramidal Lucas-Kanade from ``guess`` (``search`` = 0)."""
        import cv2

        c = self.cfg
        s = int(c.upscale)
        if c.search > 0:
            guess = _block_match(ga, gb, pts, guess, c.patch * s, c.search * s)
            win, levels = 2 * c.patch * s + 1, 1
        else:
            win, levels = c.win_size, c.levels
        lk = dict(winSize=(win, win), maxLevel=levels, flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
        p1, st, _ = cv2.calcOpticalFlowPyrLK(ga, gb, pts.astype(np.float32).reshape(-1, 1, 2),
                                             guess.astype(np.float32).reshape(-1, 1, 2).copy(), **lk)
        return p1.reshape(-1, 2).astype(np.float64), st.reshape(-1) == 1

    def _step(self, grays, a: int, b: int, pts: np.ndarray, velocity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points ``[P,2]`` in frame ``a`` -> ``(positions in frame b [P,2], passed [P] bool)``.
        ``velocity`` ``[P,2]``: each point's last motion (the constant-velocity prediction the
        search starts from, forwards and -- from the result -- backwards)."""
        c = self.cfg
        h, w = grays[a].shape
        if len(pts) == 0:
            return pts, np.zeros(0, bool)
        if c.method == "lk":
            p1, ok1 = self._lk(grays[a], grays[b], pts, pts + velocity)
            p1 = np.where(np.isfinite(p1), p1, pts + velocity)
            p0b, ok0 = self._lk(grays[b], grays[a], p1, p1 - velocity)
            ok = ok1 & ok0
        else:
            fw, bw = self._flow(grays, a, b), self._flow(grays, b, a)
            p1 = pts + _sample_flow(fw, pts)
            p0b = p1 + _sample_flow(bw, p1)
            ok = np.ones(len(pts), bool)
        err = np.linalg.norm(p0b - pts, axis=1)
        inside = (p1[:, 0] >= 0) & (p1[:, 0] <= w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= h - 1)
        ok = ok & np.isfinite(p1).all(1) & np.isfinite(err) & (err <= c.fb_threshold * c.upscale) & inside
        p1 = np.where(np.isfinite(p1), p1, pts)
        return p1, ok

    def _flow(self, grays, a: int, b: int) -> np.ndarray:
        import cv2

        key = (a, b)
        if key not in self._flows:
            dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            self._flows[key] = dis.calc(grays[a], grays[b], None)
        return self._flows[key]

    def _reseed(self, pos_prev: np.ndarray, pos: np.ndarray, ok: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        """A point that failed the check moves on at its last velocity (it is not visible
        there) and is tracked again from that prediction on the next frame."""
        if not self.cfg.reseed:
            return pos
        return np.where(ok[:, None], pos, pos_prev + velocity)

    # ------------------------------------------------------------------ interface
    def track(self, frames: torch.Tensor, queries: Optional[torch.Tensor] = None) -> Tracks:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [T,H,W,3], got {tuple(frames.shape)}")
        if queries is None:
            raise ValueError("the opencv tracker needs query points [Q,3] (frame, x, y)")
        q = torch.as_tensor(queries, dtype=torch.float64).cpu()
        if q.ndim != 2 or q.shape[1] != 3:
            raise ValueError(f"queries must be [Q,3] (frame, x, y), got {tuple(q.shape)}")
        T = int(frames.shape[0])
        s = int(self.cfg.upscale)
        self._flows = {}
        grays = _gray(frames, s)
        Q = q.shape[0]
        tracks = np.zeros((Q, T, 2), np.float64)
        visible = np.zeros((Q, T), bool)
        qf = q[:, 0].round().long().numpy()
        if ((qf < 0) | (qf >= T)).any():
            raise ValueError(f"query frame out of range for {T} frames: {int(qf[(qf < 0) | (qf >= T)][0])}")
        # pixel centres at integers; upscaled: x' = s (x + 0.5) - 0.5
        qxy = (q[:, 1:].numpy() + 0.5) * s - 0.5
        for f in np.unique(qf):
            sel = np.flatnonzero(qf == f)
            tracks[sel, f] = qxy[sel]
            visible[sel, f] = True
            for direction in (1, -1):
                pos = qxy[sel].copy()
                vel = np.zeros_like(pos)
                a = int(f)
                while 0 <= a + direction < T:
                    b = a + direction
                    new, ok = self._step(grays, a, b, pos, vel)
                    new = self._reseed(pos, new, ok, vel)
                    vel = np.where(ok[:, None], new - pos, vel)
                    tracks[sel, b] = new
                    visible[sel, b] = ok
                    pos = new
                    a = b
        tracks = (tracks + 0.5) / s - 0.5
        return Tracks(queries=q.float(), tracks=torch.from_numpy(tracks).float(), visible=torch.from_numpy(visible))
