"""Freeze-time video generation (paper §3.2), for any :class:`VideoPrior`.

1. The prompt is rewritten for a static scene seen by an orbiting camera
   (:func:`rewrite_prompt_for_freeze_time`: "Camera circulating around" at the start,
   "time elapse" at the end, action verbs dropped). A recipe can replace the rewrite by
   any function ``str -> str`` named by a dotted path (``package.module:function``).
2. A first window of ``window`` frames is generated with the canonical frame known at
   index 0 (image-to-video).
3. The video is extended autoregressively, forward and/or backward: each step conditions
   on the ``overlap`` (8) frames at the current end (start) of the video, placed at the
   start (end) of a new window, and keeps the ``window - overlap`` (8) new frames -- until
   ``num_frames`` frames exist. Backward steps need a prior that accepts known frames at
   the end of a window (``masked``, ``ltx``, ``wan`` with a VACE checkpoint); with a
   first-frame-only prior use ``direction: forward``.

Priors that hold context firmly only at the start of a window (``context_at_start =
True``: LTX, whose frame-0 video condition is hard but whose later context is keyframe
tokens; CogVideoX image-to-video, first frame only) get their backward windows
time-reversed: the context, reversed, at the start; the output reversed back. A freeze-time
video shows a static scene, so reversed it is the same scene seen by a camera orbiting the
other way.

Each extension window records its ``seam`` (mean absolute difference between its first
generated frame and the last context frame next to it) and ``context_drift`` (how far the
prior's output strayed from the context frames before they were written back), which the
freeze-time report scores.

The result records the canonical view k_c (where the canonical frame sits in the stitched
video). Priors must return known frames exactly at their indices (the VideoPrior
contract), so overlapping frames are consistent by construction; :func:`generate_freeze_time`
writes the conditioning frames back anyway so the stitched video never depends on it.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import torch

from fourreal_core.errors import FourRealError
from fourreal_core.interfaces import VideoPrior
from fourreal_core.types import Video

__all__ = [
    "ACTION_VERBS",
    "rewrite_prompt_for_freeze_time",
    "load_function",
    "FreezeTimeResult",
    "generate_freeze_time",
]

#: Verbs (all forms listed) dropped from freeze-time prompts; -ing words not in
#: :data:`_ING_NOUNS` are dropped too.
ACTION_VERBS = frozenset(
    """
    run runs ran running walk walks walked walking jump jumps jumped jumping dance dances danced dancing
    fly flies flew flying swim swims swam swimming eat eats ate eating drink drinks drank drinking
    play plays played playing move moves moved moving ride rides rode riding roll rolls rolled rolling
    spin spins spun spinning turn turns turned turning wave waves waved waving chase chases chased chasing
    climb climbs climbed climbing fall falls fell falling throw throws threw throwing catch catches caught
    catching kick kicks kicked kicking hit hits hitting shake shakes shook shaking swing swings swung
    swinging splash splashes splashed splashing gallop gallops galloped galloping hop hops hopped hopping
    crawl crawls crawled crawling sprint sprints sprinted sprinting skate skates skated skating surf surfs
    surfed surfing dive dives dived dove diving race races raced racing bounce bounces bounced bouncing
    flap flaps flapped flapping wag wags wagged wagging sing sings sang singing talk talks talked talking
    laugh laughs laughed laughing cry cries cried crying fight fights fought fighting push pushes pushed
    pushing pull pulls pulled pulling drive drives drove driving chew chews chewed chewing lick licks
    licked licking blow blows blew blowing pour pours poured pouring stir stirs stirred stirring
    """.split()
)

#: -ing words that are usually nouns or adjectives and stay in the prompt.
_ING_NOUNS = frozenset(
    """
    building buildings morning evening ceiling painting paintings clothing king ring rings wing wings string
    strings thing things something anything nothing everything spring wedding pudding sibling duckling
    darling railing setting lighting ending landing icing earring sling viking sterling awning bedding
    stuffing frosting seasoning dumpling dumplings sapling evening ring offering ceiling feeling
    """.split()
)

_AUX = frozenset("is are was were be being been".split())
_TOKEN = re.compile(r"\s+|[^\s\w'-]+|[\w'-]+")


def rewrite_prompt_for_freeze_time(prompt: str) -> str:
    """The paper's freeze-time prompt: "Camera circulating around <prompt without action
    verbs>, time elapse".

    Action verbs (:data:`ACTION_VERBS`, and -ing words that are not common -ing nouns) are
    dropped, with an auxiliary ("is", "are"...) just before a dropped word.

    >>> rewrite_prompt_for_freeze_time("A corgi is running on the beach.")
    'Camera circulating around a corgi on the beach, time elapse'
    """
    text = prompt.strip().rstrip(".!?;:, ")
    tokens = _TOKEN.findall(text)
    words: list[str] = []
    for tok in tokens:
        if tok.isspace():
            continue
        low = tok.lower()
        is_verb = low in ACTION_VERBS or (low.endswith("ing") and len(low) >= 5 and low not in _ING_NOUNS
                                          and low.isalpha())
        if is_verb:  # drop it with the auxiliaries / conjunctions / commas just before it
            while words and (words[-1].lower() in _AUX or words[-1].lower() in ("and", "or", "then")
                             or words[-1] == ","):
                words.pop()
            continue
        words.append(tok)
    core = ""
    for w in words:  # re-join, no space before punctuation
        if core and (w[0].isalnum() or w[0] in "'-"):
            core += " "
        core += w
    core = re.sub(r"\s+,", ",", core).strip(" ,")
    first = core.split(" ", 1)[0]
    if first[:1].isupper() and (len(first) == 1 or first[1:].islower()):  # "A corgi", not "NYC"
        core = core[0].lower() + core[1:]
    if not core:
        return "Camera circulating around the scene, time elapse"
    return f"Camera circulating around {core}, time elapse"


def load_function(dotted: str) -> Callable:
    """A function from ``"package.module:function"`` or ``"package.module.function"``."""
    mod, sep, name = dotted.partition(":")
    if not sep:
        mod, _, name = dotted.rpartition(".")
    if mod == "fourreal_diffusers.freeze_time":  # moved beside the generate stage (any prior uses it)
        raise FourRealError(f"{dotted!r}: fourreal_diffusers.freeze_time moved to fourreal_stages.freeze_time; "
                            f"write 'fourreal_stages.freeze_time:{name}'")
    if not mod or not name:
        raise FourRealError(f"{dotted!r}: expected a dotted path like 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise FourRealError(f"{dotted!r}: cannot import ({exc})") from None
    if not callable(fn):
        raise FourRealError(f"{dotted!r} is not callable")
    return fn


@dataclass
class FreezeTimeResult:
    """A stitched freeze-time video.

    Attributes:
        video: ``[K,H,W,3]`` frames.
        canonical_view: k_c, the index of the canonical (input) frame in ``video``.
        prompt: the prompt the prior was given.
        windows: one dict per prior call: ``{"direction", "start" (global index of the
            window's frame 0), "known" (window indices that were conditioned on, in video
            order), and for extension windows "reversed", "context_drift", "seam"}``.
    """

    video: Video
    canonical_view: int
    prompt: str
    windows: list = field(default_factory=list)


def generate_freeze_time(
    prior: VideoPrior,
    image: torch.Tensor,
    prompt: str,
    num_frames: int,
    window: Optional[int] = None,
    overlap: int = 8,
    height: Optional[int] = None,
    width: Optional[int] = None,
    direction: Literal["both", "forward", "backward"] = "both",
    seed: int = 0,
    on_window: Optional[Callable[[int, int], None]] = None,
    reverse_backward: Optional[bool] = None,
) -> FreezeTimeResult:
    """Generate a freeze-time video of ``num_frames`` frames around ``image``.

    Args:
        prior: any video prior.
        image: ``[H,W,3]`` the canonical frame (resized to ``height x width`` if needed).
        prompt: the (already rewritten) freeze-time prompt.
        num_frames: target length K (>= ``window``).
        window: frames per prior call (default ``prior.num_frames``, 16 in the paper).
        overlap: frames conditioned on when extending (8 in the paper).
        height, width: frame size (default the prior's).
        direction: extend "both" ways (half the new frames each side), or one way.
        seed: base seed; window i uses ``seed + i``.
        on_window: ``callback(i, total_windows)`` after each prior call (progress).
        reverse_backward: hand backward windows to the prior time-reversed (context at the
            start); default the prior's declared ``context_at_start``.

    Returns:
        :class:`FreezeTimeResult` (``canonical_view`` is 0 unless frames were added backwards).
    """
    from fourreal_media import resize_frames

    W = int(window or prior.num_frames)
    H_, W_ = int(height or prior.height), int(width or prior.width)
    if not 1 <= overlap < W:
        raise FourRealError(f"freeze-time: overlap {overlap} must be in [1, window={W})")
    K = max(int(num_frames), W)
    img = resize_frames(image.detach().float().cpu()[None], H_, W_)[0]
    step_new = W - overlap
    extra = K - W
    if direction == "both":
        n_fwd, n_bwd = (extra + 1) // 2, extra // 2
    elif direction == "forward":
        n_fwd, n_bwd = extra, 0
    elif direction == "backward":
        n_fwd, n_bwd = 0, extra
    else:
        raise FourRealError(f"freeze-time: direction {direction!r} is not one of both, forward, backward")
    total = 1 + -(-n_fwd // step_new) + -(-n_bwd // step_new)
    windows = []
    rev = bool(prior.context_at_start) if reverse_backward is None else bool(reverse_backward)

    def mad(a, b) -> float:
        return round(float((a - b).abs().mean()), 6)

    first = prior.generate(prompt, W, H_, W_, known_frames={0: img}, seed=seed).frames.float().cpu()
    first[0] = img
    frames = list(first)
    k_c = 0
    windows.append({"direction": "first", "start": 0, "known": [0]})
    i = 1
    if on_window:
        on_window(i, total)
    todo_f, todo_b = n_fwd, n_bwd
    while todo_f > 0 or todo_b > 0:
        # alternate directions so both sides grow evenly
        go_fwd = todo_f > 0 and (todo_b <= 0 or todo_f >= todo_b)
        if go_fwd:
            need = min(step_new, todo_f)
            ctx = torch.stack(frames[-overlap:])
            known = {j: ctx[j] for j in range(overlap)}
            out = prior.generate(prompt, W, H_, W_, known_frames=known, seed=seed + i).frames.float().cpu()
            drift = mad(out[:overlap], ctx)
            out[:overlap] = ctx
            windows.append({"direction": "forward", "start": len(frames) - overlap, "known": list(range(overlap)),
                            "reversed": False, "context_drift": drift, "seam": mad(out[overlap], ctx[-1])})
            frames.extend(out[overlap : overlap + need])
            todo_f -= need
        else:
            need = min(step_new, todo_b)
            ctx = torch.stack(frames[:overlap])
            if rev:  # context reversed at the window's start; the output reversed back
                known = {j: ctx[overlap - 1 - j] for j in range(overlap)}
                out = prior.generate(prompt, W, H_, W_, known_frames=known, seed=seed + i).frames.float().cpu()
                out = out.flip(0)
            else:
                known = {W - overlap + j: ctx[j] for j in range(overlap)}
                out = prior.generate(prompt, W, H_, W_, known_frames=known, seed=seed + i).frames.float().cpu()
            drift = mad(out[W - overlap:], ctx)
            out[W - overlap:] = ctx
            windows.append({"direction": "backward", "start": -(W - overlap), "known": list(range(W - overlap, W)),
                            "reversed": rev, "context_drift": drift, "seam": mad(out[W - overlap - 1], ctx[0])})
            # shift earlier windows' starts: frames are prepended
            for w in windows[:-1]:
                w["start"] += need
            windows[-1]["start"] = need - (W - overlap)
            frames[:0] = list(out[W - overlap - need : W - overlap])
            k_c += need
            todo_b -= need
        i += 1
        if on_window:
            on_window(i, total)
    video = torch.stack(frames[:K]).clamp(0.0, 1.0)
    return FreezeTimeResult(Video(video.contiguous(), fps=8.0), k_c, prompt, windows)
