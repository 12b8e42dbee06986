"""``fourreal export RUN --web OUT/``: a static page that plays the 4D scene from ``file://``.

The scene is built in-process and saved as a run's 4D scene: Gaussians on a wall and a floor
in front of a reference camera, an MLP deformer with perturbed weights restricted (the motion
stage's ``dynamic_region``) to the right half of the reference image -- so the left half is
static and the right half moves. Saved and reloaded through the scene manifest, as ``fourreal
export`` sees it.

* the export's own properties: static Gaussians stored once, moving ones per step, the
  moving ones' centres equal to the deformation at each time; the size options drop what
  they say and the report says it; bad options are one line, exit 2;
* in headless Chromium (Debian's ``chromium``, driven by playwright as tests/test_viewer.py
  does; skipped without it): the page opens from ``file://`` with no server, is not blank,
  starts at the reference camera (it matches ``fourreal render`` of that camera where the
  scene is static), and moving the time slider changes the picture where the scene moves
  and not where it is static.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fourreal_env, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
W, H = 128, 96
TIMES = [i / 7 for i in range(8)]


def _look_at(eye, target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    eye, target = torch.tensor(eye, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)
    fwd = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(fwd, torch.tensor([0.0, 0.0, 1.0])), dim=0)
    down = torch.linalg.cross(fwd, right)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, fwd, eye
    return torch.linalg.inv(c2w)


def _cams(eyes, w=W, h=H):
    from fourreal_core.types import Cameras

    K = torch.tensor([[100.0, 0, w / 2], [0, 100.0, h / 2], [0, 0, 1]])
    return Cameras(torch.stack([_look_at(e) for e in eyes]), K.expand(len(eyes), 3, 3).clone(), w, h)


def make_scene(folder: Path, n: int = 3000, seed: int = 0, amplitude: float = 0.03, all_move: bool = False):
    """A saved 4D scene: a wall (y = 0.6) and a floor (z = -0.6) of coloured Gaussians, seen
    by a reference camera at (0, -4, 0.4); motion only in the right half of its image."""
    from fourreal_core.recipe import component_from_plain
    from fourreal_core.registry import get_registry
    from fourreal_formats.region import RegionDeformer
    from fourreal_formats.scene4d import Scene4D

    reg = get_registry()
    rep = component_from_plain("representation", {"name": "gaussians", "params": {"sh_degree": 1}}, reg,
                               source="test")
    model = rep.build(reg)
    model.init_random_box(n=n, extent=1.0, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        raw = model.raw
        m = raw["means"]
        half = n // 2
        m[:half, 1] = 0.6 + 0.02 * torch.rand(half, generator=g)  # the wall
        m[half:, 2] = -0.6 + 0.02 * torch.rand(n - half, generator=g)  # the floor
        m[half:, 1] = m[half:, 1] * 0.6
        raw["scales"].fill_(math.log(0.05))
        raw["opacities"].fill_(2.0)
        # smooth colour bands so that motion shows as a change of colour
        x, z = m[:, 0], m[:, 2]
        rgb = torch.stack([0.5 + 0.45 * torch.sin(6 * x), 0.5 + 0.45 * torch.sin(5 * z + 1), 0.5 + 0.4 * torch.cos(4 * x * z)], 1)
        raw["sh0"].copy_(((rgb - 0.5) / 0.28209479177387814).reshape(raw["sh0"].shape))
        raw["shN"].normal_(0, 0.05, generator=g)
    dspec = component_from_plain("deformer", {"name": "mlp", "params": {"width": 32, "depth": 2}}, reg, source="test")
    torch.manual_seed(seed)  # the deformer's initial weights: the same scene at every run
    inner = dspec.build(reg)
    inner.setup(num_frames=len(TIMES), canonical=None, canonical_means=model.params().means.detach())
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in inner.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        inner.layers[0].weight[:, -13:].add_(torch.randn(inner.layers[0].weight.shape[0], 13) * 0.8)
        inner.head_dx.weight.add_(torch.randn_like(inner.head_dx.weight) * amplitude)
    ref = _cams([(0.0, -4.0, 0.4)])
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[:, 0 if all_move else W // 2 + 8:] = True
    deformer = RegionDeformer(inner, ref.viewmats[0], ref.Ks[0], mask)
    s = Scene4D(model, deformer, torch.zeros(3), times=torch.tensor(TIMES), canonical_frame=3,
                reference_camera=ref,
                freeze_cameras=_cams([(4 * math.sin(a), -4 * math.cos(a), 0.4) for a in (-0.5, 0.0, 0.5)]),
                deformer_spec=dspec, representation_spec=rep)
    folder.mkdir(parents=True, exist_ok=True)
    return s.save(folder)


def _load(manifest: Path):
    from fourreal_core.registry import get_registry
    from fourreal_formats.scene4d import Scene4D

    return Scene4D.load(manifest, get_registry(), "cpu")


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="module")
def web(scene_file, tmp_path_factory):
    from fourreal_viewer.web import WebOptions, build_web

    out = tmp_path_factory.mktemp("web") / "page"
    report = build_web(_load(scene_file), out, WebOptions(fps=4.0))
    return out, report


def _moving_truth(scene) -> torch.Tensor:
    """[N] bool: the Gaussians the scene moves, from its deformer (the region's selection)."""
    g0 = scene.model.params()
    moved = torch.zeros(len(g0), dtype=torch.bool)
    for t in TIMES:
        moved |= (scene.gaussians_at(t).means - g0.means).norm(dim=-1) > 0
    return moved


def test_static_once_moving_per_step_and_the_report(scene_file, web):
    out, report = web
    scene = _load(scene_file)
    truth = _moving_truth(scene)
    assert 0.2 < truth.float().mean() < 0.6  # the test scene: about a third moves
    assert (report.static, report.moving) == (int((~truth).sum()), int(truth.sum()))
    assert report.times == pytest.approx(TIMES, abs=1e-6) and report.canonical_step == 3
    meta = json.loads((out / "web.json").read_text())
    assert meta["bytes"] == (out / "index.html").stat().st_size
    assert set(meta["cameras"]) == {"reference", "freeze-time 0", "freeze-time 1", "freeze-time 2"}
    ref = meta["cameras"]["reference"]
    assert ref["position"] == pytest.approx([0.0, -4.0, 0.4], abs=1e-5)
    assert ref["fov"] == pytest.approx(2 * math.atan(H / 2 / 100.0))
    html = (out / "index.html").read_text()
    assert "__VISER4D__" in html and "fourreal-panel" in html and "http://" not in html.split("__VISER_EMBED_DATA__")[1][:64]


def test_size_options_drop_what_they_say(scene_file, tmp_path, web):
    from fourreal_viewer.web import WebOptions, build_web

    scene = _load(scene_file)
    full = web[1]
    opac = scene.model.params().opacities.detach()
    with torch.no_grad():  # a spread of opacities to prune by
        scene.model.raw["opacities"].copy_(torch.linspace(-4, 4, len(opac)))
    r = build_web(scene, tmp_path / "a", WebOptions(num_times=2, min_opacity=0.5, sh_degree=0, position_bits=12))
    n_low = int((torch.sigmoid(torch.linspace(-4, 4, len(opac))) < 0.5).sum())
    assert r.dropped_low_opacity == n_low and r.gaussians_kept == len(opac) - n_low
    assert len(r.times) == 2 and r.sh_degree == 0 and r.position_bits == 12
    notes = " ".join(r.notes)
    assert f"dropped {n_low:,} Gaussians with opacity < 0.5" in notes and "SH degree 0 of the scene's 1" in notes
    assert "12 bits" in notes
    assert r.data_bytes < full.data_bytes * 0.4  # fewer steps and Gaussians: less scene in the page
    assert r.client_bytes == full.client_bytes and r.bytes == r.client_bytes + r.data_bytes
    r2 = build_web(scene, tmp_path / "b", WebOptions(max_gaussians=500))
    assert r2.gaussians_kept == 500 and r2.dropped_over_max == len(opac) - 500
    assert "least opaque" in " ".join(r2.notes)


def test_bad_options_are_one_line_exit_2(scene_file, tmp_path):
    env = fourreal_env(extra_modules="")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    cases = [
        (["export", str(scene_file), "--web", str(tmp_path / "w"), "--web-times", "1"], "--web-times"),
        (["export", str(scene_file), "--web", str(tmp_path / "busy")], "--web"),
        (["export", str(tmp_path / "nowhere"), "--web", str(tmp_path / "w")], "nowhere"),
        (["export", str(scene_file), "--web-sh-degree", "0"], "--web-sh-degree"),
    ]
    for args, name in cases:
        res = run_cli(args, tmp_path, env=env, timeout=120)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and name in lines[0] and "Traceback" not in res.stderr, (
            args, res.returncode, res.stderr)
    assert (tmp_path / "busy" / "mine.txt").read_text() == "x" and not (tmp_path / "w").exists()


def _render_reference(scene, t: float) -> np.ndarray:
    from fourreal_core.recipe import component_from_plain
    from fourreal_core.registry import get_registry

    reg = get_registry()
    rast = component_from_plain("rasterizer", {"name": "torch", "params": {}}, reg, source="test").build(reg)
    return scene.render(rast, scene.reference_camera[:1], t).rgb[0].clamp(0, 1).numpy()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run does)")
def test_page_from_file_url_plays_the_moving_region_only(scene_file, web, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e .[browser])")
    from PIL import Image

    out, report = web
    scene = _load(scene_file)
    a_step, b_step = 0, len(TIMES) - 1
    r0, r1 = _render_reference(scene, TIMES[a_step]), _render_reference(scene, TIMES[b_step])
    diff = np.abs(r0 - r1).max(-1)
    moving = diff > 0.15
    still = torch.nn.functional.max_pool2d(torch.tensor(diff > 0.01).float()[None, None], 7, 1, 3)[0, 0].numpy() < 0.5
    lit = r0.max(-1) > 0.05
    assert moving.mean() > 0.03 and (still & lit).mean() > 0.1, (moving.mean(), (still & lit).mean())

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 5 * W, "height": 5 * H})
        errors: list = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        requests: list = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "index.html").resolve().as_uri())
        page.wait_for_function("() => window.__FOURREAL_WEB__ && window.__FOURREAL_WEB__.ready", timeout=60_000)
        assert page.evaluate("() => window.__FOURREAL_WEB__.camera") == "reference"

        def shot(name: str, step: int, differ_from: "np.ndarray | None" = None) -> np.ndarray:
            page.evaluate(f"() => window.__FOURREAL_WEB__.seek({step})")
            page.wait_for_function(f"() => window.__FOURREAL_WEB__.step === {step}", timeout=10_000)
            time.sleep(1.5)  # the splats of that step are sorted and drawn
            if differ_from is not None:
                # software WebGL on a loaded machine can take longer to sort and draw a new step:
                # wait (up to 30 s) until the moving region shows it; the asserts below still decide
                t_end = time.time() + 30
                while time.time() < t_end:
                    page.locator("canvas").last.screenshot(path=str(shots / "_poll.png"))
                    img = np.asarray(Image.open(shots / "_poll.png").convert("RGB").resize((W, H), Image.BOX),
                                     dtype=np.float32) / 255
                    if float(np.abs(img - differ_from).max(-1)[moving].mean()) > 0.05:
                        time.sleep(1.0)
                        break
                    time.sleep(0.5)
            page.evaluate("() => document.querySelectorAll('#fourreal-panel, [data-viser4d-playback], "
                          ".mantine-Notification-root, .mantine-Notifications-root')"
                          ".forEach(e => e.style.visibility = 'hidden')")
            p = shots / f"{name}.png"
            page.locator("canvas").last.screenshot(path=str(p))
            page.evaluate("() => document.querySelectorAll('#fourreal-panel, [data-viser4d-playback]')"
                          ".forEach(e => e.style.visibility = 'visible')")
            return np.asarray(Image.open(p).convert("RGB").resize((W, H), Image.BOX), dtype=np.float32) / 255

        a = shot("t0", a_step)
        b = shot("t1", b_step, differ_from=a)
        label = page.locator("#fourreal-time").inner_text()
        # orbit with the mouse, then back through the reference-camera button
        page.mouse.move(2.5 * W, 2.5 * H)
        page.mouse.down()
        page.mouse.move(2.5 * W + 150, 2.5 * H + 10, steps=8)
        page.mouse.up()
        c = shot("orbit", b_step)
        page.get_by_role("button", name="reference camera").click()
        d = shot("back", b_step)
        browser.close()
    # no server: every request the page made is the file itself or inline data
    assert all(u.startswith(("file://", "data:", "blob:")) for u in requests), requests
    assert not errors, errors
    change = np.abs(a - b).max(-1)
    ref_err = float(np.abs(a - r0)[still & lit].mean())
    measured = {"change_moving": float(change[moving].mean()), "change_static": float(change[still].mean()),
                "ref_error_static": ref_err, "orbit_change": float(np.abs(c - b).mean()),
                "back_error": float(np.abs(d - b).mean()), "bytes": report.bytes}
    (shots / "measured.json").write_text(json.dumps(measured, indent=1))
    print("web page test:", json.dumps(measured))
    assert "t = 1.000" in label
    for img in (a, b):  # not blank
        assert img.std() > 0.05 and len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200
    # the page starts at the reference camera: it matches the project's render where nothing moves
    assert ref_err < 0.06, measured
    # the slider changes the picture where the scene moves, not where it is static
    assert change[moving].mean() > 0.1, measured
    assert change[still].mean() < 0.02, measured
    # the mouse orbits; the button puts the view back
    assert measured["orbit_change"] > 0.03 and measured["back_error"] < 0.01, measured


def test_bytes_per_stored_gaussian_fit_20k_by_30_in_50_mb(web):
    """The scene's share of the page per stored Gaussian (static once, moving once per step):
    at most 50 MB / (20,000 x 30) -- so a 20k-Gaussian, 30-step scene that moves everywhere fits
    in 50 MB (the slow test below builds exactly that: 21.8 MB measured)."""
    _, r = web
    stored = r.static + r.moving * len(r.times)
    assert r.data_bytes / stored < 50e6 / (20_000 * 30), r.data_bytes / stored


@pytest.mark.slow
def test_20k_gaussians_30_steps_all_moving_under_50_mb(tmp_path):
    from fourreal_viewer.web import WebOptions, build_web

    scene = _load(make_scene(tmp_path / "scene", n=20_000, all_move=True))
    r = build_web(scene, tmp_path / "web", WebOptions(num_times=30))
    assert r.gaussians_kept == 20_000 and len(r.times) == 30 and r.moving > 0.9 * 20_000
    assert r.bytes <= 50e6, r.bytes


def _decode_splatv(path: Path):
    """The test's own reading of the .splatv layout (splaTV's hybrid.js): header, then 16
    uint32 per Gaussian."""
    import struct

    data = path.read_bytes()
    magic, n = struct.unpack_from("<II", data, 0)
    header = json.loads(data[8:8 + n])
    rows = np.frombuffer(data, np.uint32, offset=8 + n).reshape(-1, 16)
    assert magic == 0x674B and rows.nbytes == header[0]["size"] == header[0]["texwidth"] * header[0]["texheight"] * 4 * 4

    def halves(cols):
        u = rows[:, cols]
        return np.stack([(u & 0xFFFF).astype(np.uint16).view(np.float16),
                         (u >> 16).astype(np.uint16).view(np.float16)], -1).reshape(len(rows), -1).astype(np.float64)

    return header, {"p": rows[:, 0:3].copy().view(np.float32).astype(np.float64), "q": halves([3, 4]),
                    "scale": halves([5, 6])[:, :3], "rgba": rows[:, 7:8].copy().view(np.uint8),
                    "m": halves([8, 9, 10, 11, 12])[:, :9], "w": halves([13, 14]), "trbf": halves([15])}


class _CubicScene:
    """A stand-in 4D scene whose centres move on known cubics in dt = t - t_c and whose
    rotations turn about z at a known rate."""

    def __init__(self, n=500, t_c=0.4):
        from fourreal_core.interfaces import GaussianParams

        g = torch.Generator().manual_seed(1)
        self.t_c = t_c
        self.x0 = torch.rand(n, 3, generator=g) * 2 - 1
        self.coef = [torch.randn(n, 3, generator=g) * s for s in (0.5, 0.3, 0.2)]
        self.rate = torch.rand(n, generator=g) * 0.2
        sc = torch.full((n, 3), 0.05)
        self.g0 = GaussianParams(self.x0, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), sc, torch.full((n,), 0.9),
                                 torch.rand(n, 1, 3, generator=g), sh_degree=0)
        self.model = type("M", (), {"params": lambda _self: self.g0})()
        self.reference_camera = _cams([(0.0, -4.0, 0.4)])
        self.freeze_cameras = None

    def gaussians_at(self, t):
        from fourreal_core.interfaces import GaussianParams

        dt = t - self.t_c
        x = self.x0 + self.coef[0] * dt + self.coef[1] * dt ** 2 + self.coef[2] * dt ** 3
        a = self.rate * dt / 2
        q = torch.stack([torch.cos(a), torch.zeros_like(a), torch.zeros_like(a), torch.sin(a)], 1)
        return GaussianParams(x, q, self.g0.scales, self.g0.opacities, self.g0.colors, 0)


def test_splatv_recovers_cubic_trajectories(tmp_path):
    from fourreal_stages.splatv import write_splatv

    s = _CubicScene()
    n = len(s.x0)
    times = torch.linspace(0, 1, 12)
    rep = write_splatv(s, tmp_path / "a.splatv", times, s.t_c, torch.ones(n, dtype=torch.bool),
                       torch.rand(n, 3), torch.full((n,), 0.9), extent=3.0)
    header, d = _decode_splatv(tmp_path / "a.splatv")
    assert header[0]["vertexCount"] == n and header[0]["cameras"][0]["position"] == pytest.approx([0, -4, 0.4], abs=1e-5)
    d = {k: v[:n] for k, v in d.items()}
    np.testing.assert_allclose(d["p"], s.x0.numpy(), atol=1e-4)  # the centre at t_c, float32
    for k in range(3):  # the motion coefficients, float16
        np.testing.assert_allclose(d["m"][:, 3 * k:3 * k + 3], s.coef[k].numpy(), atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(d["trbf"][:, 0], s.t_c, atol=1e-3)
    assert (d["trbf"][:, 1] >= 999).all() and np.allclose(d["scale"], 0.05, atol=1e-4)
    # the rotation about z: q(t) ~ q + w dt with w = (.., rate/2); sign-aligned, normalised by the viewer
    np.testing.assert_allclose(d["w"][:, 3], s.rate.numpy() / 2, atol=2e-3)
    assert rep["position_max_error"] < 2e-3 and rep["scale_change_dropped_max_log"] == 0.0
    assert rep["rotation_max_error_deg"] < 0.5


def test_splatv_fit_error_is_reported_as_measured(scene_file, tmp_path):
    """On the test scene (an MLP: not a cubic), the reported error is what decoding the file
    and evaluating splaTV's formula at each time gives."""
    from fourreal_viewer.web import WebOptions, build_web

    scene = _load(scene_file)
    r = build_web(scene, tmp_path / "w", WebOptions(splatv=True))
    f = r.splatv
    _, d = _decode_splatv(tmp_path / "w" / "scene.splatv")
    d = {k: v[: f["gaussians"]] for k, v in d.items()}
    errs = []
    for t in TIMES:
        dt = (t - d["trbf"][:, 0])[:, None]
        x = d["p"] + d["m"][:, 0:3] * dt + d["m"][:, 3:6] * dt ** 2 + d["m"][:, 6:9] * dt ** 3
        errs.append(np.linalg.norm(x - scene.gaussians_at(t).means.numpy(), axis=1))
    errs = np.stack(errs)
    assert f["position_rms_error"] == pytest.approx(float(np.sqrt((errs ** 2).mean())), rel=1e-3)
    assert f["position_max_error"] == pytest.approx(float(errs.max()), rel=1e-3)
    assert f["position_max_error"] > 1e-3  # not a cubic: there is an error, and it is reported
    meta = json.loads((tmp_path / "w" / "web.json").read_text())
    assert meta["splatv"]["file"] == "scene.splatv"
