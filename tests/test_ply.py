"""The standard 3DGS PLY layout: names, order, channel-major f_rest, exact round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from fourreal_core.errors import InputError
from fourreal_core.interfaces import GaussianParams
from fourreal_core.types import Cameras
from fourreal_gaussians.configs import GaussiansConfig
from fourreal_gaussians.model import GaussianModel
from fourreal_gaussians.ply import property_names, read_ply, sh_degree_from_rest, write_ply


def standard_names(degree: int) -> list[str]:
    """Written out independently of the module under test."""
    n_rest = 3 * ((degree + 1) ** 2 - 1)
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += ["f_rest_%d" % i for i in range(n_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def random_model(n: int, degree: int, seed: int = 0) -> GaussianModel:
    g = torch.Generator().manual_seed(seed)
    m = GaussianModel(GaussiansConfig(sh_degree=degree))
    k1 = (degree + 1) ** 2 - 1
    m.set_raw(
        {
            "means": torch.randn(n, 3, generator=g),
            "quats": torch.randn(n, 4, generator=g),
            "scales": torch.randn(n, 3, generator=g) - 3,
            "opacities": torch.randn(n, generator=g),
            "sh0": torch.randn(n, 1, 3, generator=g),
            "shN": torch.randn(n, k1, 3, generator=g) * 0.1,
        }
    )
    return m


def bits(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32).view(np.int32)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_property_names_are_standard(tmp_path, degree):
    m = random_model(10, degree)
    m.save_ply(tmp_path / "a.ply")
    ply = PlyData.read(str(tmp_path / "a.ply"))
    assert not ply.text and ply.byte_order == "<"
    assert [e.name for e in ply.elements] == ["vertex"]
    v = ply["vertex"]
    assert [p.name for p in v.properties] == standard_names(degree)
    assert property_names(degree) == standard_names(degree)
    assert all(p.val_dtype in ("float", "float32", "f4") for p in v.properties)
    assert len(v.data) == 10
    assert b"format binary_little_endian 1.0" in (tmp_path / "a.ply").read_bytes()[:200]
    # normals are zero; opacity is the logit, scales are logs
    for k in ("nx", "ny", "nz"):
        assert np.all(v[k] == 0)
    assert np.array_equal(bits(v["opacity"]), bits(m.opacities))
    assert np.array_equal(bits(v["scale_1"]), bits(m.scales[:, 1]))


def test_f_rest_is_channel_major(tmp_path):
    m = random_model(4, 2)
    m.save_ply(tmp_path / "a.ply")
    v = PlyData.read(str(tmp_path / "a.ply"))["vertex"]
    shN = m.shN.detach().numpy()  # [N,8,3]
    for c in range(3):
        for k in range(8):
            assert np.array_equal(bits(v["f_rest_%d" % (c * 8 + k)]), bits(shN[:, k, c]))
    for c in range(3):
        assert np.array_equal(bits(v["f_dc_%d" % c]), bits(m.sh0[:, 0, c]))


@pytest.mark.parametrize("degree", [0, 3])
def test_round_trip_is_bitwise(tmp_path, degree):
    m = random_model(257, degree, seed=degree)
    m.save_ply(tmp_path / "a.ply")
    m2 = GaussianModel(GaussiansConfig(sh_degree=1))  # any configured degree: the file wins
    m2.load_ply(tmp_path / "a.ply")
    assert len(m2) == 257 and m2.max_sh_degree == degree and m2.active_sh_degree == degree
    for name in ("means", "quats", "scales", "opacities", "sh0", "shN"):
        a, b = m.raw[name], m2.raw[name]
        assert a.shape == b.shape, name
        assert np.array_equal(bits(a), bits(b)), name
    m2.save_ply(tmp_path / "b.ply")
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()
    # no temporary files left behind by the atomic writer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ply", "b.ply"]


def _foreign_ply(path, n: int, degree: int, extra: bool, seed: int = 0) -> dict:
    """A PLY written with plyfile directly, as other 3DGS tools do (optionally with extra
    properties before, between and after the standard ones). Returns the column values."""
    rng = np.random.default_rng(seed)
    names = standard_names(degree)
    cols = {k: rng.standard_normal(n).astype(np.float32) for k in names}
    for k in ("nx", "ny", "nz"):
        cols[k] = np.zeros(n, np.float32)
    for i in range(3):
        cols["scale_%d" % i] = (cols["scale_%d" % i] * 0.3 - 3.0).astype(np.float32)
    for i in range(3 * ((degree + 1) ** 2 - 1)):
        cols["f_rest_%d" % i] = (cols["f_rest_%d" % i] * 0.1).astype(np.float32)
    cols["rot_0"] = (np.abs(cols["rot_0"]) + 1.0).astype(np.float32)
    cols["x"] = (cols["x"] * 0.3).astype(np.float32)
    cols["y"] = (cols["y"] * 0.3).astype(np.float32)
    cols["z"] = (cols["z"] * 0.3).astype(np.float32)
    order = list(names)
    dtype = [(k, "f4") for k in order]
    if extra:
        order = ["red"] + order[:9] + ["confidence"] + order[9:] + ["segment"]
        dtype = [("red", "u1")] + dtype[:9] + [("confidence", "f8")] + dtype[9:] + [("segment", "i4")]
    arr = np.empty(n, dtype=dtype)
    for k in names:
        arr[k] = cols[k]
    if extra:
        arr["red"] = rng.integers(0, 255, n)
        arr["confidence"] = rng.random(n)
        arr["segment"] = rng.integers(0, 10, n)
    PlyData([PlyElement.describe(arr, "vertex")], text=False, byte_order="<").write(str(path))
    return cols


@pytest.mark.parametrize("degree,extra", [(3, False), (0, False), (3, True), (0, True), (1, True)])
def test_foreign_ply_loads_renders_and_resaves(tmp_path, degree, extra):
    from fourreal_gaussians.configs import TorchRasterizerConfig
    from fourreal_gaussians.rasterizers import TorchRasterizer

    n = 64
    src = tmp_path / "foreign.ply"
    cols = _foreign_ply(src, n, degree, extra, seed=degree)
    m = GaussianModel(GaussiansConfig(sh_degree=3))
    m.load_ply(src)
    assert len(m) == n and m.max_sh_degree == degree
    k1 = (degree + 1) ** 2 - 1
    assert m.shN.shape == (n, k1, 3)
    # values land in the right places (channel-major f_rest)
    assert np.array_equal(bits(m.means[:, 2]), bits(cols["z"]))
    assert np.array_equal(bits(m.quats[:, 3]), bits(cols["rot_3"]))
    for c in range(3):
        assert np.array_equal(bits(m.sh0[:, 0, c]), bits(cols["f_dc_%d" % c]))
        for k in range(k1):
            assert np.array_equal(bits(m.shN[:, k, c]), bits(cols["f_rest_%d" % (c * k1 + k)]))

    # renders: same image as the activated values computed here independently
    cams = Cameras(
        Cameras.look_at([[0.0, -3.0, 0.5], [2.0, 2.0, 1.0]], [0.0, 0.0, 0.0]),
        Cameras.intrinsics(40.0, 40.0, 16.0, 16.0), 32, 32,
    )
    rast = TorchRasterizer(TorchRasterizerConfig())
    with torch.no_grad():
        out = rast.rasterize(m.params(), cams, torch.ones(3))
    t = lambda ks: torch.from_numpy(np.stack([cols[k] for k in ks], -1))  # noqa: E731
    sh = torch.cat(
        [t(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None]]
        + ([t(["f_rest_%d" % (c * k1 + k) for c in range(3)])[:, None] for k in range(k1)])
        , dim=1,
    )
    ref = GaussianParams(
        means=t(["x", "y", "z"]),
        quats=torch.nn.functional.normalize(t(["rot_0", "rot_1", "rot_2", "rot_3"]), dim=-1),
        scales=torch.exp(t(["scale_0", "scale_1", "scale_2"])),
        opacities=torch.sigmoid(torch.from_numpy(cols["opacity"])),
        colors=sh,
        sh_degree=degree,
    )
    with torch.no_grad():
        out_ref = rast.rasterize(ref, cams, torch.ones(3))
    assert out.rgb.shape == (2, 32, 32, 3)
    assert float(out.alpha.max()) > 0.2  # something is visible
    assert torch.allclose(out.rgb, out_ref.rgb, atol=1e-6)

    # re-saves identically: the standard properties bitwise, extra properties dropped
    dst = tmp_path / "resaved.ply"
    m.save_ply(dst)
    v = PlyData.read(str(dst))["vertex"]
    assert [p.name for p in v.properties] == standard_names(degree)
    for k in standard_names(degree):
        assert np.array_equal(bits(v[k]), bits(cols[k])), k
    if not extra:
        assert dst.read_bytes() == src.read_bytes()


def test_invalid_files_raise_input_error(tmp_path):
    with pytest.raises(InputError):
        sh_degree_from_rest(3 * 5)  # 6 coefficients per channel: not a square
    # missing a required property
    arr = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(tmp_path / "pts.ply"))
    with pytest.raises(InputError, match="missing"):
        read_ply(tmp_path / "pts.ply")
    # f_rest count that is no SH degree
    names = standard_names(0)[:9] + ["f_rest_%d" % i for i in range(6)] + standard_names(0)[9:]
    arr = np.zeros(2, dtype=[(k, "f4") for k in names])
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(tmp_path / "bad.ply"))
    with pytest.raises(InputError, match="f_rest"):
        read_ply(tmp_path / "bad.ply")


def test_write_ply_accepts_numpy_and_flat_shapes(tmp_path):
    rng = np.random.default_rng(1)
    n = 5
    means = rng.standard_normal((n, 3)).astype(np.float32)
    write_ply(
        tmp_path / "a.ply", means, rng.standard_normal((n, 4)), rng.standard_normal((n, 3)),
        rng.standard_normal((n, 1)), rng.standard_normal((n, 3)), np.zeros((n, 0, 3)),
    )
    g = read_ply(tmp_path / "a.ply")
    assert g.sh_degree == 0 and len(g) == n
    assert np.array_equal(bits(g.means), bits(means))
