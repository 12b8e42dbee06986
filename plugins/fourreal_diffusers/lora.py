"""LoRAs for the diffusers priors: loaded once into the ONE base pipeline, switched per use.

Open video models have no "static scene, circular camera" context embedding (paper §3.2);
the community's answer is LoRAs trained on orbit / bullet-time footage. A prior's
``loras: [{file, scale, trigger, uses}]`` are loaded with diffusers' ``load_lora_weights``
(``peft``) as named adapters of the prior's transformer(s), and before every call the
prior activates those whose ``uses`` include the call's use (``set_adapters`` with their
scales, or ``disable_lora`` when none is): no second multi-GB pipeline per LoRA choice.

Uses: ``reference`` (reference-video generation), ``freeze_time`` (freeze-time windows),
``sds_multiview`` and ``sds_temporal`` (``predict_x0``). Callers name the use with
:func:`lora_use` (the generate stage does); otherwise ``generate`` counts as ``reference``
without known frames and ``freeze_time`` with them, and ``predict_x0`` as ``sds_temporal``
when the ``times`` it is given differ and ``sds_multiview`` otherwise (multi-view SDS
renders one time from many cameras, temporal SDS many times from one camera).

Files: ``.safetensors`` only (never a pickle), a file or a folder holding exactly one. The
state dict goes through the pipeline's ``lora_state_dict`` (which converts the community
formats diffusers knows) and is checked against the transformer before loading: every
``lora_A``/``lora_B`` pair must name a linear layer of this model with matching shapes, so
a LoRA made for another architecture fails with one line instead of loading nothing.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterable, Optional

import torch

from fourreal_core.errors import FourRealError, InputError

__all__ = ["USES", "LoraSet", "lora_use", "add_triggers", "sds_use", "lora_file"]

USES = ("reference", "freeze_time", "sds_multiview", "sds_temporal")


@contextlib.contextmanager
def lora_use(prior, use: str):
    """``with lora_use(prior, "freeze_time"): prior.generate(...)`` -- any prior; a no-op for
    priors without LoRA support."""
    if use not in USES:
        raise FourRealError(f"LoRA use {use!r} is not one of {', '.join(USES)}")
    with prior.use(use):
        yield prior


def add_triggers(prompt: str, triggers: Iterable[str]) -> str:
    """``"trigger, prompt"`` for each trigger not already in the prompt (case-insensitive)."""
    out = prompt
    for t in reversed([t.strip() for t in triggers if t and t.strip()]):
        if t.lower() not in out.lower():
            out = f"{t}, {out}" if out else t
    return out


def sds_use(cameras=None, times=None) -> str:
    """``sds_temporal`` when the frames' ``times`` differ, else ``sds_multiview``."""
    if times is not None:
        t = torch.as_tensor(times).detach().float().reshape(-1)
        if t.numel() > 1 and float(t.max() - t.min()) > 1e-6:
            return "sds_temporal"
    return "sds_multiview"


def lora_file(path) -> Path:
    """The ``.safetensors`` file of a LoRA path (a file, or a folder holding exactly one)."""
    p = Path(str(path)).expanduser()
    if not str(path):
        raise InputError("loras[].file is empty: give a local .safetensors LoRA file")
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        if len(files) != 1:
            raise InputError(f"{p}: a LoRA folder must hold exactly one .safetensors file, found "
                             f"{len(files)}{': ' + ', '.join(f.name for f in files) if files else ''}")
        return files[0]
    if not p.is_file():
        raise InputError(f"{p}: LoRA file not found (loras[].file; a local .safetensors file or a folder holding one)")
    if p.suffix != ".safetensors":
        raise InputError(f"{p}: LoRA weights must be a .safetensors file (pickled .bin/.pt files are never loaded)")
    return p


def _lora_pairs(sd: dict) -> dict[str, dict[str, torch.Tensor]]:
    """``{module path: {"A": tensor, "B": tensor}}`` of the transformer's LoRA keys."""
    pairs: dict[str, dict] = {}
    for k, v in sd.items():
        m = re.match(r"^(?:transformer\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$", k)
        if m is None or k.startswith(("text_encoder", "unet.")):
            continue
        pairs.setdefault(m.group(1), {})[m.group(2)] = v
    return pairs


def check_fits(sd: dict, transformer, file: Path, what: str) -> int:
    """Raise :class:`InputError` unless every LoRA pair of ``sd`` fits a linear layer of
    ``transformer``. Returns the number of layers it adapts."""
    pairs = _lora_pairs(sd)
    if not pairs:
        raise InputError(f"{file}: no LoRA weights (lora_A/lora_B pairs) for a {what} transformer in this file")
    for name, ab in pairs.items():
        try:
            mod = transformer.get_submodule(name)
        except AttributeError:
            raise InputError(f"{file}: a LoRA for another architecture: layer {name!r} does not exist in this {what} "
                             f"transformer ({len(pairs)} layers in the file)") from None
        w = getattr(mod, "weight", None)
        if w is None or w.ndim != 2 or "A" not in ab or "B" not in ab:
            raise InputError(f"{file}: LoRA layer {name!r} does not match a linear layer of this {what} transformer")
        a, b = ab["A"], ab["B"]
        if a.shape[1] != w.shape[1] or b.shape[0] != w.shape[0] or a.shape[0] != b.shape[1]:
            raise InputError(
                f"{file}: a LoRA for another architecture (or model size): layer {name!r} is {tuple(w.shape)} here, "
                f"the LoRA expects {(int(b.shape[0]), int(a.shape[1]))}")
    return len(pairs)


class LoraSet:
    """The LoRAs of one prior, loaded into its pipelines (see the module docstring).

    Args:
        specs: the prior's ``loras`` (:class:`~fourreal_diffusers.configs.LoraSpec`).
        pipes: the prior's diffusers pipelines (CogVideoX may hold two).
        what: the prior's name for messages.
    """

    def __init__(self, specs, pipes: list, what: str) -> None:
        from safetensors.torch import load_file

        self.specs = list(specs or [])
        self.pipes = [p for p in pipes if p is not None]
        self.names: list[str] = []
        for i, spec in enumerate(self.specs):
            for use in spec.uses:
                if use not in USES:
                    raise InputError(f"loras[{i}].uses: {use!r} is not one of {', '.join(USES)}")
            f = lora_file(spec.file)
            try:
                raw = load_file(str(f))
            except Exception as exc:  # noqa: BLE001 - a corrupt file: one line
                raise InputError(f"{f}: cannot read LoRA safetensors ({str(exc).splitlines()[0][:160]})") from None
            st = f.stat()
            key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
            name = None
            for pipe in self.pipes:
                loaded = pipe.__dict__.setdefault("_fourreal_loras", {})
                if key in loaded:  # already in this (shared) pipeline: switch, never reload
                    name = loaded[key]
                    continue
                if not hasattr(pipe, "load_lora_weights"):
                    raise InputError(f"{f}: {type(pipe).__name__} has no LoRA loader in this diffusers version")
                out = pipe.lora_state_dict(dict(raw))
                sd = out[0] if isinstance(out, tuple) else out
                check_fits(sd, pipe.transformer, f, what)
                name = f"fr{len(loaded)}_{re.sub(r'[^0-9A-Za-z_]', '_', f.stem)[:40]}"
                try:
                    pipe.load_lora_weights(dict(sd), adapter_name=name)
                except ImportError:
                    raise FourRealError("LoRAs need `pip install fourreal[video]` (peft)") from None
                except (ValueError, RuntimeError, KeyError) as exc:
                    raise InputError(f"{f}: cannot load this LoRA into the {what} transformer "
                                     f"({str(exc).splitlines()[0][:200]})") from None
                loaded[key] = name
            self.names.append(name)

    def active(self, use: str) -> list[tuple[str, float, str]]:
        """``(adapter, scale, trigger)`` of the LoRAs active for ``use``."""
        return [(n, float(s.scale), s.trigger) for n, s in zip(self.names, self.specs) if use in s.uses]

    def triggers(self, use: str) -> list[str]:
        return [t for _, _, t in self.active(use) if t]

    def activate(self, use: str, pipe=None) -> None:
        """Switch ``pipe`` (default: all) to the adapters of ``use`` (none: LoRA off). Pipelines
        shared with other prior instances may hold other adapters: they are switched off."""
        act = self.active(use)
        for p in [pipe] if pipe is not None else self.pipes:
            if not p.__dict__.get("_fourreal_loras"):
                continue
            if act:
                p.enable_lora()
                p.set_adapters([a for a, _, _ in act], [s for _, s, _ in act])
            else:
                p.disable_lora()

    def prompt(self, prompt: str, use: str) -> str:
        return add_triggers(prompt, self.triggers(use))


def describe(lset: Optional[LoraSet]) -> list[dict]:
    """JSON-friendly list of a prior's LoRAs (for generation.json)."""
    if lset is None:
        return []
    return [{"file": str(s.file), "adapter": n, "scale": float(s.scale), "trigger": s.trigger, "uses": list(s.uses)}
            for n, s in zip(lset.names, lset.specs)]
