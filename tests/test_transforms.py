"""Property tests for pointea.data.transforms, one or more per transform."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from pointea.data.transforms import (
    RSMix,
    Compose,
    FarthestPointSubsample,
    NormalizeUnitSphere,
    PointWOLF,
    RandomApply,
    RandomJitter,
    RandomLocalDropout,
    RandomNoisePoints,
    RandomPointDropout,
    RandomRotatePerturb,
    RandomRotateSO3,
    RandomRotateUp,
    RandomScaleTranslate,
    RandomSubsample,
    ShufflePoints,
)


def _item(N: int = 256, normals: bool = True, seed: int = 0, batch: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, N) if batch else (N,)
    xyz = torch.randn(*shape, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5]) + 3.0
    channels = [xyz]
    if normals:
        n = torch.randn(*shape, 3, generator=g)
        channels.append(n / n.norm(dim=-1, keepdim=True))
    parts = torch.arange(N).expand(*shape).clone() % 5
    return {"points": torch.cat(channels, dim=-1), "parts": parts, "label": torch.tensor(3)}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


RANDOM_TRANSFORMS = [
    lambda g: RandomScaleTranslate(generator=g),
    lambda g: RandomJitter(generator=g),
    lambda g: RandomRotateUp(generator=g),
    lambda g: RandomRotateSO3(generator=g),
    lambda g: RandomRotatePerturb(generator=g),
    lambda g: RandomPointDropout(generator=g),
    lambda g: RandomLocalDropout(generator=g),
    lambda g: RandomSubsample(100, generator=g),
    lambda g: FarthestPointSubsample(100, random_start=True, generator=g),
    lambda g: ShufflePoints(generator=g),
    lambda g: PointWOLF(generator=g),
    lambda g: PointWOLF(sample_type="random", normalize=False, generator=g),
    lambda g: RandomNoisePoints(generator=g),
    lambda g: RandomApply(ShufflePoints(generator=g), 0.99, generator=g),
    lambda g: RandomNoisePoints(max_ratio=0.5, region="box", generator=g),
]
ALL_TRANSFORMS = RANDOM_TRANSFORMS + [lambda g: NormalizeUnitSphere(), lambda g: FarthestPointSubsample(100)]


@pytest.mark.parametrize("make", ALL_TRANSFORMS)
@pytest.mark.parametrize("batch", [0, 4])
def test_input_never_mutated_and_other_keys_pass_through(make, batch):
    item = _item(batch=batch)
    saved = {key: value.clone() for key, value in item.items()}
    out = make(_gen())(item)
    assert out is not item
    for key, value in saved.items():
        assert torch.equal(item[key], value), f"{key} was modified"
    assert out["label"] is item["label"]
    assert out["points"].shape[-1] == 6 and out["points"].ndim == item["points"].ndim
    assert out["parts"].shape == out["points"].shape[:-1]


@pytest.mark.parametrize("make", RANDOM_TRANSFORMS)
def test_same_generator_seed_same_output(make):
    a = make(_gen(5))(_item())
    b = make(_gen(5))(_item())
    c = make(_gen(6))(_item())
    assert torch.equal(a["points"], b["points"]) and torch.equal(a["parts"], b["parts"])
    assert not torch.equal(a["points"], c["points"])


def test_normalize_unit_sphere():
    for batch in (0, 3):
        out = NormalizeUnitSphere()(_item(batch=batch))
        xyz = out["points"][..., :3]
        torch.testing.assert_close(xyz.norm(dim=-1).amax(dim=-1), torch.ones(xyz.shape[:-2]))
        torch.testing.assert_close(xyz.mean(dim=-2), torch.zeros(xyz.shape[:-2] + (3,)), atol=1e-5, rtol=0)
        assert torch.equal(out["points"][..., 3:], _item(batch=batch)["points"][..., 3:])


def _pairwise(xyz: torch.Tensor) -> torch.Tensor:
    return torch.cdist(xyz, xyz, compute_mode="donot_use_mm_for_euclid_dist")


@pytest.mark.parametrize("transform", [RandomRotateUp(generator=_gen(1)), RandomRotateSO3(generator=_gen(1)),
                                       RandomRotatePerturb(30.0, generator=_gen(1))])
def test_rotation_preserves_distances_and_rotates_normals(transform):
    item = _item(N=64, batch=3)
    out = transform(item)
    xyz, normals = item["points"][..., :3], item["points"][..., 3:]
    new_xyz, new_normals = out["points"][..., :3], out["points"][..., 3:]
    torch.testing.assert_close(_pairwise(new_xyz), _pairwise(xyz), atol=1e-4, rtol=1e-4)
    # Recover each cloud's rotation from the points (least squares) and check normals follow it.
    rotation = torch.linalg.lstsq(xyz, new_xyz).solution  # (B, 3, 3): new = xyz @ R
    torch.testing.assert_close(rotation.transpose(1, 2) @ rotation, torch.eye(3).expand(3, 3, 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(new_normals, normals @ rotation, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(rotation[0], rotation[1]), "clouds in a batch should get their own rotation"


@pytest.mark.parametrize("axis,index", [("x", 0), ("y", 1), ("z", 2)])
def test_rotate_up_keeps_the_up_coordinate(axis, index):
    item = _item(batch=2)
    out = RandomRotateUp(axis=axis, generator=_gen())(item)
    assert torch.equal(out["points"][..., index], item["points"][..., index])
    torch.testing.assert_close(out["points"][..., 3:].norm(dim=-1), torch.ones(2, 256))


def test_rotate_perturb_stays_within_its_angles():
    # Each angle is U(-a, a) about its own axis: the rotation of R = Rz Ry Rx recovered from
    # the matrix must stay within a per axis, and reach close to it over many clouds.
    max_angle = 20.0
    points = torch.eye(3).expand(2000, 3, 3).clone()  # three unit vectors per cloud: x @ R^T = R^T rows
    matrix = RandomRotatePerturb(max_angle, generator=_gen())({"points": points})["points"].transpose(1, 2)
    angle_y = torch.rad2deg(torch.asin(-matrix[:, 2, 0]))
    angle_x = torch.rad2deg(torch.atan2(matrix[:, 2, 1], matrix[:, 2, 2]))
    angle_z = torch.rad2deg(torch.atan2(matrix[:, 1, 0], matrix[:, 0, 0]))
    for angle in (angle_x, angle_y, angle_z):
        assert angle.abs().max() <= max_angle + 1e-3
        assert angle.abs().max() > 0.95 * max_angle and abs(float(angle.mean())) < 1.0
    unchanged = RandomRotatePerturb(0.0, generator=_gen())({"points": points})["points"]
    torch.testing.assert_close(unchanged, points)
    with pytest.raises(ValueError, match="max_angle"):
        RandomRotatePerturb(-1.0)


def test_rotate_so3_is_uniform():
    # Under a uniform rotation the image of a fixed unit vector is uniform on the sphere: mean 0,
    # and E[x^2] = 1/3 per coordinate.
    N = 4000
    points = torch.zeros(N, 1, 3)
    points[..., 0] = 1.0
    out = RandomRotateSO3(generator=_gen())({"points": points})["points"][:, 0]  # (N, 3)
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=0.05, rtol=0)
    torch.testing.assert_close((out**2).mean(0), torch.full((3,), 1 / 3), atol=0.03, rtol=0)


def test_jitter_is_clipped_and_leaves_normals():
    item = _item(batch=2)
    out = RandomJitter(sigma=0.05, clip=0.02, generator=_gen())(item)
    delta = out["points"][..., :3] - item["points"][..., :3]
    assert delta.abs().max() <= 0.02 + 1e-6
    assert (delta.abs() > 0.019).float().mean() > 0.3  # most draws hit the clip at sigma >> clip
    assert torch.equal(out["points"][..., 3:], item["points"][..., 3:])
    small = RandomJitter(sigma=0.01, clip=1.0, generator=_gen())(_item(N=4096))
    std = (small["points"][:, :3] - _item(N=4096)["points"][:, :3]).std()
    assert abs(std.item() - 0.01) < 0.001


@pytest.mark.parametrize("anisotropic", [True, False])
def test_scale_translate_range_and_normals(anisotropic):
    B = 64
    # A tilted plane s * u + t * v with normal u x v: after any scaling the normal must stay
    # perpendicular to it.
    u, v = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.0, 1.0, -0.3])
    st = torch.randn(B, 32, 2)
    xyz = st[..., :1] * u + st[..., 1:] * v  # (B, 32, 3), x = s and y = t
    normals = torch.linalg.cross(u, v).expand(B, 32, 3)
    normals = normals / normals.norm(dim=-1, keepdim=True)
    transform = RandomScaleTranslate(scale=(0.5, 2.0), shift=0.0, anisotropic=anisotropic, generator=_gen())
    out = transform({"points": torch.cat([xyz, normals], dim=-1)})["points"]
    ratio = out[..., :2] / xyz[..., :2]  # per-axis scale factors, (B, 32, 2)
    factor = ratio[:, 0]  # (B, 2): the same within a cloud
    torch.testing.assert_close(ratio, factor[:, None].expand_as(ratio))
    assert factor.min() >= 0.5 - 1e-6 and factor.max() <= 2.0 + 1e-6
    assert factor.min() < 0.7 and factor.max() > 1.7  # the range is used
    assert anisotropic == (not torch.allclose(factor[:, 0], factor[:, 1]))
    # Tangent vectors of the transformed plane (differences of points) stay orthogonal to normals.
    tangents = out[:, 1:, :3] - out[:, :1, :3]
    assert ((tangents * out[:, 1:, 3:]).sum(-1) / tangents.norm(dim=-1)).abs().max() < 1e-4
    torch.testing.assert_close(out[..., 3:].norm(dim=-1), torch.ones(B, 32))

    shifted = RandomScaleTranslate(scale=(1.0, 1.0), shift=0.2, generator=_gen())({"points": xyz})["points"]
    offset = (shifted - xyz)[:, 0]  # (B, 3)
    torch.testing.assert_close(shifted - xyz, offset[:, None].expand_as(xyz))
    assert offset.abs().max() <= 0.2 and offset.abs().max() > 0.15


def test_point_dropout_keeps_n_and_replaces_by_first_point():
    item = _item(N=512, batch=8)
    out = RandomPointDropout(max_ratio=0.875, generator=_gen())(item)
    assert out["points"].shape == item["points"].shape
    same = (out["points"] == item["points"]).all(-1)  # (B, N) kept in place
    first = (out["points"] == item["points"][:, :1]).all(-1)
    assert (same | first).all()
    assert torch.equal(out["parts"][~same], item["parts"][:, :1].expand_as(item["parts"])[~same])
    dropped = (~same).float().mean(dim=1)
    assert dropped.max() <= 0.875 + 0.05 and dropped.std() > 0.05  # a random ratio per cloud
    none = RandomPointDropout(max_ratio=0.0, generator=_gen())(item)
    assert torch.equal(none["points"], item["points"])


def test_local_dropout_cuts_one_hole_and_refills_from_kept_points():
    item = _item(N=400, batch=6)
    out = RandomLocalDropout(max_ratio=0.5, max_clusters=1, generator=_gen())(item)
    assert out["points"].shape == item["points"].shape and torch.equal(out["label"], item["label"])
    for cloud, result, parts in zip(item["points"], out["points"], out["parts"]):
        match = (result[:, None] == cloud[None]).all(-1)  # (N, N): output point j is input point i
        assert (match.sum(-1) == 1).all(), "output points must be input points"
        source = match.float().argmax(-1)
        assert torch.equal(parts, item["parts"][0][source])  # parts follow their points
        present = torch.zeros(400, dtype=torch.bool)
        present[source] = True
        missing, kept = cloud[~present, :3], cloud[present, :3]
        assert len(missing) <= 200
        if len(missing) == 0:
            continue
        # one hole: some removed point is nearer to every removed point than to any kept point
        reach = torch.cdist(missing, missing).amax(dim=1)  # (M,) from each candidate centre
        clearance = torch.cdist(missing, kept).amin(dim=1)
        assert (reach <= clearance).any()
    ratios = torch.stack([(~(out["points"][b][:, None] == item["points"][b][None]).all(-1).any(0)).float().mean()
                          for b in range(6)])
    assert ratios.max() <= 0.5 and ratios.std() > 0.02  # a random ratio per cloud, up to max_ratio
    untouched = RandomLocalDropout(max_ratio=0.0, generator=_gen())(item)
    assert torch.equal(untouched["points"].sort(dim=1).values, item["points"].sort(dim=1).values)


def test_local_dropout_spreads_the_count_over_several_holes():
    sphere = torch.nn.functional.normalize(torch.randn(1, 2000, 3, generator=_gen(1)), dim=-1)
    single = RandomLocalDropout(max_ratio=0.3, max_clusters=1, generator=_gen(2))({"points": sphere})
    several = RandomLocalDropout(max_ratio=0.3, max_clusters=7, generator=_gen(2))({"points": sphere})

    def farthest_pair_of_removed(out):
        present = (out["points"][0][:, None] == sphere[0][None]).all(-1).any(0)
        return torch.cdist(sphere[0][~present], sphere[0][~present]).max()

    # the same count cut as several holes spreads further over the sphere than one hole
    assert farthest_pair_of_removed(several) > farthest_pair_of_removed(single)


def _check_selection(item: dict, out: dict, k: int, distinct: bool = True) -> torch.Tensor:
    """Map each output point back to its input index; parts must follow."""
    B, N, _ = item["points"].shape
    match = (out["points"][:, :, None] == item["points"][:, None]).all(-1)  # (B, k, N)
    assert (match.sum(-1) == 1).all(), "output points must be input points"
    index = match.float().argmax(-1)  # (B, k)
    assert out["points"].shape == (B, k, item["points"].shape[-1])
    assert torch.equal(out["parts"], torch.gather(item["parts"], 1, index))
    if distinct:
        assert all(len(set(row.tolist())) == k for row in index)
    return index


def test_random_subsample_distinct_points_and_parts():
    item = _item(N=300, batch=3)
    out = RandomSubsample(100, generator=_gen())(item)
    index = _check_selection(item, out, 100)
    assert not torch.equal(index[0], index[1])
    short = RandomSubsample(500, generator=_gen())(item)
    index = _check_selection(item, short, 500, distinct=False)
    assert all(len(set(row.tolist())) == 300 for row in index), "short clouds keep every point"


def test_farthest_point_subsample_coverage_and_parts():
    item = _item(N=2000, normals=False, batch=2)
    out = FarthestPointSubsample(64)(item)
    index = _check_selection(item, out, 64)
    assert (index[:, 0] == 0).all()  # deterministic start
    assert torch.equal(FarthestPointSubsample(64)(item)["points"], out["points"])

    # Coverage: the largest distance from any point to the picked set is far below that of random picks.
    def coverage(selected: torch.Tensor) -> torch.Tensor:
        return torch.cdist(item["points"], selected).amin(-1).amax(-1)

    random_out = RandomSubsample(64, generator=_gen())(item)
    assert (coverage(out["points"]) < 0.7 * coverage(random_out["points"])).all()


def test_shuffle_is_a_permutation():
    item = _item(N=200, batch=2)
    out = ShufflePoints(generator=_gen())(item)
    index = _check_selection(item, out, 200)
    assert not torch.equal(index[0], torch.arange(200))


def test_compose_and_repr():
    transform = Compose([NormalizeUnitSphere(), RandomScaleTranslate(), RandomJitter(sigma=0.02, clip=0.04),
                         RandomRotateUp(axis="z"), FarthestPointSubsample(128)])
    text = repr(transform)
    for fragment in ("NormalizeUnitSphere()", "RandomScaleTranslate(scale=(0.6667, 1.5), shift=0.2, anisotropic=True)",
                     "RandomJitter(sigma=0.02, clip=0.04)", "RandomRotateUp(axis='z')",
                     "FarthestPointSubsample(num_points=128, random_start=False)"):
        assert fragment in text
    out = transform(_item())
    assert out["points"].shape == (128, 6)
    assert repr(RandomPointDropout(0.5)) == "RandomPointDropout(max_ratio=0.5)"
    assert repr(RandomLocalDropout(0.3, 4)) == "RandomLocalDropout(max_ratio=0.3, max_clusters=4)"


def test_bad_arguments():
    with pytest.raises(ValueError, match="axis must be one of x, y, z, got 'w'"):
        RandomRotateUp(axis="w")
    with pytest.raises(ValueError, match="scale"):
        RandomScaleTranslate(scale=(2.0, 1.0))
    with pytest.raises(ValueError, match="max_ratio"):
        RandomPointDropout(1.0)
    with pytest.raises(ValueError, match="max_clusters must be at least 1, got 0"):
        RandomLocalDropout(max_clusters=0)
    expected = r"'points' must have shape \(N, C\) or \(B, N, C\) with C >= 3, got \(10, 2\)"
    with pytest.raises(ValueError, match=expected):
        NormalizeUnitSphere()({"points": torch.zeros(10, 2)})
    with pytest.raises(ValueError, match="'parts' has shape"):
        ShufflePoints()({"points": torch.zeros(10, 3), "parts": torch.zeros(9, dtype=torch.long)})


class _Clouds(Dataset):
    def __init__(self, transform):
        self.items = [_item(N=64, seed=i) for i in range(8)]
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.transform(self.items[index])


def test_dataloader_workers_are_reproducible():
    transform = Compose([RandomRotateSO3(), RandomScaleTranslate(), RandomJitter(), RandomPointDropout(),
                         RandomSubsample(32)])
    loader = DataLoader(_Clouds(transform), batch_size=4, num_workers=2)

    def run():
        torch.manual_seed(1234)
        return [batch["points"] for batch in loader]

    first, second = run(), run()
    assert len(first) == 2
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert not torch.equal(first[0][0], first[0][1])
    torch.manual_seed(99)
    assert not torch.equal(next(iter(loader))["points"], first[0])


def test_float64_and_device_are_kept():
    item = {"points": _item()["points"].double()}
    for make in ALL_TRANSFORMS:
        out = make(_gen())(item)
        assert out["points"].dtype == torch.float64 and out["points"].device == item["points"].device


def test_angle_is_uniform():
    points = torch.zeros(3000, 1, 3)
    points[..., 0] = 1.0
    out = RandomRotateUp(generator=_gen())({"points": points})["points"][:, 0]
    angle = torch.atan2(out[:, 2], out[:, 0])
    histogram = torch.histc(angle, bins=8, min=-math.pi, max=math.pi)
    assert (histogram > 3000 / 8 * 0.8).all()


def test_normalize_unit_sphere_is_scale_invariant_without_overflow():
    points = torch.randn(2, 64, 3) * 3 + 1
    reference = NormalizeUnitSphere()({"points": points})["points"]
    for scale in (1e-30, 1e20, 1e36):  # squares of 1e20 overflow float32
        scaled = NormalizeUnitSphere()({"points": points * scale})["points"]
        torch.testing.assert_close(scaled, reference, atol=1e-5, rtol=0)
    assert torch.allclose(reference.norm(dim=-1).amax(dim=1), torch.ones(2))


# --------------------------------------------------------------------------- robust training


def _unit_item(N: int = 128, batch: int = 4, seed: int = 0) -> dict:
    """:func:`_item` clouds centred and scaled into the unit sphere, as training feeds them."""
    item = _item(N=N, batch=batch, seed=seed)
    return {**NormalizeUnitSphere()(item), "label": torch.arange(batch)}


@pytest.mark.parametrize("sample_type", ["fps", "random"])
def test_pointwolf_with_zero_ranges_is_the_identity(sample_type):
    still = dict(max_rotation=0.0, max_scale=1.0, max_translation=0.0, sample_type=sample_type)
    item = _unit_item()
    out = PointWOLF(**still, generator=_gen())(item)
    torch.testing.assert_close(out["points"], item["points"], atol=1e-5, rtol=0)
    assert torch.equal(out["label"], item["label"]) and torch.equal(out["parts"], item["parts"])
    raw = _item(batch=2)  # off-centre clouds stay where they are without the final normalization
    out = PointWOLF(**still, normalize=False, generator=_gen())(raw)
    torch.testing.assert_close(out["points"], raw["points"], atol=1e-5, rtol=0)


def test_pointwolf_one_anchor_rotation_is_rigid_about_the_anchor():
    # One anchor takes every kernel weight, so the cloud turns rigidly about that anchor (a point
    # of the cloud, which stays put); the normals turn with it.
    item = _unit_item(N=64, batch=8)
    out = PointWOLF(num_anchors=1, max_rotation=40.0, max_scale=1.0, max_translation=0.0, normalize=False,
                    generator=_gen(2))(item)
    xyz, new_xyz = item["points"][..., :3], out["points"][..., :3]
    torch.testing.assert_close(_pairwise(new_xyz), _pairwise(xyz), atol=1e-4, rtol=1e-4)
    assert ((new_xyz - xyz).norm(dim=-1).amin(dim=1) < 1e-5).all()  # the anchor
    moved = (new_xyz - xyz).norm(dim=-1).amax(dim=1) > 1e-3  # rotation is kept with probability 1/2
    assert 0 < moved.sum() < 8
    rotation = torch.linalg.lstsq(xyz - xyz.mean(1, keepdim=True), new_xyz - new_xyz.mean(1, keepdim=True)).solution
    torch.testing.assert_close(out["points"][..., 3:], item["points"][..., 3:] @ rotation, atol=1e-4, rtol=1e-4)


def test_pointwolf_scaling_keeps_normals_perpendicular_and_the_defaults_deform():
    # a tilted plane scaled about one anchor: normals must stay perpendicular to it
    B = 16
    u, v = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.0, 1.0, -0.3])
    st = torch.rand(B, 32, 2, generator=_gen()) - 0.5
    normals = torch.linalg.cross(u, v).expand(B, 32, 3)
    points = torch.cat([st[..., :1] * u + st[..., 1:] * v, normals / normals.norm(dim=-1, keepdim=True)], dim=-1)
    out = PointWOLF(num_anchors=1, max_rotation=0.0, max_scale=3.0, max_translation=0.0,
                    generator=_gen())({"points": points})["points"]
    tangents = out[:, 1:, :3] - out[:, :1, :3]
    assert ((tangents * out[:, 1:, 3:]).sum(-1) / tangents.norm(dim=-1)).abs().max() < 1e-4
    assert not torch.allclose(_pairwise(out[..., :3]), _pairwise(points[..., :3]) / 2, atol=1e-3)

    item = _unit_item(N=256, batch=8)
    deformed = PointWOLF(generator=_gen())(item)["points"]
    assert deformed.shape == item["points"].shape and deformed.dtype == torch.float32
    torch.testing.assert_close(deformed[..., :3].norm(dim=-1).amax(dim=1), torch.ones(8))  # renormalized
    torch.testing.assert_close(deformed[..., 3:].norm(dim=-1), torch.ones(8, 256))
    # non-rigid: the distances change, and not by one factor per cloud
    ratio = _pairwise(deformed[..., :3])[:, 0, 1:] / _pairwise(item["points"][..., :3])[:, 0, 1:]
    assert (ratio.std(dim=1) > 0.01).sum() >= 6


@pytest.mark.parametrize("region", ["ball", "box"])
def test_noise_points_replace_a_fraction_and_drop_their_parts(region):
    item = _unit_item(N=512, batch=8)
    out = RandomNoisePoints(max_ratio=0.3, region=region, generator=_gen())(item)
    assert out["points"].shape == item["points"].shape and out["points"].dtype == torch.float32
    assert torch.equal(out["label"], item["label"])
    kept = (out["points"] == item["points"]).all(-1)  # (B, N)
    assert torch.equal(out["parts"][kept], item["parts"][kept]) and (out["parts"][~kept] == -1).all()
    fraction = (~kept).float().mean(dim=1)
    assert fraction.max() <= 0.3 + 0.06 and fraction.std() > 0.02  # a random ratio per cloud
    noise = out["points"][~kept]
    torch.testing.assert_close(noise[:, 3:].norm(dim=-1), torch.ones(len(noise)))
    if region == "ball":
        assert noise[:, :3].norm(dim=-1).max() <= 1.0 + 1e-6 and noise[:, :3].norm(dim=-1).max() > 0.8
    else:
        xyz = item["points"][..., :3]
        low, high = xyz.amin(1, keepdim=True), xyz.amax(1, keepdim=True)
        inside = (out["points"][..., :3] >= low) & (out["points"][..., :3] <= high)
        assert inside.all()
    assert torch.equal(RandomNoisePoints(max_ratio=0.0, generator=_gen())(item)["points"], item["points"])


def _tagged_batch(B: int = 8, N: int = 200, seed: int = 0) -> dict:
    """Clouds whose 4th channel names their cloud and point (cloud * N + point)."""
    xyz = NormalizeUnitSphere()({"points": torch.randn(B, N, 3, generator=_gen(seed))})["points"]
    tag = torch.arange(B * N, dtype=torch.float32).reshape(B, N, 1)
    return {"points": torch.cat([xyz, tag], dim=-1), "label": torch.arange(B), "parts": tag[..., 0].long()}


def test_rsmix_inserts_a_rigid_subset_of_the_partner_and_mixes_labels_by_its_share():
    B, N = 8, 200
    mixed_clouds = 0
    for seed in range(4):
        item = _tagged_batch(B, N, seed)
        out = RSMix(num_classes=B, beta=1.0, prob=1.0, generator=_gen(seed))(item)
        points, labels = out["points"], out["label"]
        assert points.shape == (B, N, 4) and labels.shape == (B, B) and labels.dtype == torch.float32
        torch.testing.assert_close(labels.sum(1), torch.ones(B))
        assert torch.equal(out["parts"], points[..., 3].long())  # per-point values come along
        source = (points[..., 3] // N).long()  # (B, N) cloud each point comes from
        for i in range(B):
            kept = (points[i] == item["points"][i]).all(-1)  # own points stay in place, untouched
            partners = source[i][~kept].unique()
            assert len(partners) <= 1
            lam = (~kept).float().mean()
            if len(partners) == 0:
                torch.testing.assert_close(labels[i], torch.eye(B)[i])
                continue
            j = int(partners[0])  # may be i itself: then the label stays one-hot
            mixed_clouds += j != i
            expected = (1 - lam) * torch.eye(B)[i] + lam * torch.eye(B)[j]
            torch.testing.assert_close(labels[i], expected)  # the label share is the point share
            # the inserted points are the partner's, all moved by one translation
            tags = points[i][~kept][:, 3].long() % N
            offset = points[i][~kept][:, :3] - item["points"][j][tags, :3]
            torch.testing.assert_close(offset, offset[:1].expand_as(offset), atol=1e-5, rtol=0)
    assert mixed_clouds >= 8


def test_rsmix_labels_are_one_hot_when_nothing_is_mixed_and_soft_labels_mix_again():
    item = _tagged_batch()
    out = RSMix(num_classes=10, prob=0.0, generator=_gen())(item)
    assert torch.equal(out["points"], item["points"])
    assert torch.equal(out["label"], torch.nn.functional.one_hot(item["label"], 10).float())
    twice = RSMix(prob=1.0, generator=_gen(1))(RSMix(num_classes=10, prob=1.0, generator=_gen())(item))
    torch.testing.assert_close(twice["label"].sum(1), torch.ones(8))


def test_rsmix_is_reproducible_from_its_generator():
    item = _tagged_batch()
    a, b, c = (RSMix(num_classes=8, prob=1.0, generator=_gen(seed))(item) for seed in (5, 5, 6))
    assert torch.equal(a["points"], b["points"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(a["points"], c["points"])


def test_rsmix_refusals():
    item = _tagged_batch()
    with pytest.raises(ValueError, match="needs num_classes"):
        RSMix(prob=1.0)(item)
    with pytest.raises(ValueError, match="got a single cloud"):
        RSMix(num_classes=8)({"points": item["points"][0], "label": item["label"][0]})
    mask = torch.ones(8, 200, dtype=torch.bool)
    mask[0, -1] = False
    with pytest.raises(ValueError, match="padded"):
        RSMix(num_classes=8)({**item, "mask": mask})
    with pytest.raises(ValueError, match="beta must be positive"):
        RSMix(beta=0.0)
    with pytest.raises(ValueError, match="max_scale >= 1"):
        PointWOLF(max_scale=0.5)
    with pytest.raises(ValueError, match="region must be one of ball, box"):
        RandomNoisePoints(region="cube")
    assert repr(RSMix(num_classes=3)) == "RSMix(num_classes=3, beta=1.0, prob=0.5, max_points=512)"


# --------------------------------------------------------------------------- as train.augmentation entries

ROBUST = ("train.augmentation=[{name: pointwolf}, {name: noise_points, max_ratio: 0.1}, "
          "{name: point_dropout, max_ratio: 0.2}, {name: rsmix, prob: 1.0}]")


def test_augmentation_entries_are_checked_when_the_config_loads():
    from pointea.config import load_config

    config = load_config(None, [ROBUST])
    assert [spec["name"] for spec in config.train.augmentation][-1] == "rsmix"
    cases = {
        # 13 names: more than are listed, so only the close match is suggested
        "[{name: pointwolff}]": r"train.augmentation\[0\].name is 'pointwolff'; did you mean pointwolf\?",
        "[{name: dropout}]": r"'dropout'; did you mean point_dropout or local_dropout\?",
        "[{name: cutout}]": r"train.augmentation\[0\].name is 'cutout'; valid choices: normalize, .*, rsmix$",
        "[{name: pointwolf, sigmaa: 0.3}]": r"train.augmentation\[0\] \(pointwolf\): unknown argument 'sigmaa'; "
                                            r"valid arguments: .*; did you mean sigma\?",
        "[{name: rsmix, num_classes: 3}]": "unknown argument 'num_classes'",  # the engine supplies it
        "[{name: noise_points, region: cube}]": r"train.augmentation\[0\] \(noise_points\): region must be one of",
        "[{name: rsmix}, {name: jitter}]": r"train.augmentation\[1\] \(jitter\) comes after the mixing entry "
                                           r"train.augmentation\[0\]; mixing must come last",
    }
    for value, message in cases.items():
        with pytest.raises(ValueError, match=message):
            load_config(None, [f"train.augmentation={value}"])
    with pytest.raises(ValueError, match="classification only, but model.preset 'pointea-partseg' is a segmentation"):
        load_config(None, ["model.preset=pointea-partseg", "train.augmentation=[{name: rsmix}]"])


def _record_targets(monkeypatch) -> list:
    """Record the targets every training loss sees."""
    from pointea.engine.tasks import ClassificationTask

    seen, loss = [], ClassificationTask.loss

    def recording(self, logits, batch, smoothing=0.0):
        seen.append(batch["label"].clone())
        return loss(self, logits, batch, smoothing)

    monkeypatch.setattr(ClassificationTask, "loss", recording)
    return seen


@pytest.mark.parametrize("route", ["memory", "loader"])
def test_training_mixes_soft_labels_on_both_data_routes(tmp_path, monkeypatch, route):
    from test_train import tiny_config

    from pointea.engine import train as train_module

    if route == "loader":  # the DataLoader route of datasets that are not held in memory
        monkeypatch.setattr(train_module, "_as_tensors", lambda *args: None)
    seen = _record_targets(monkeypatch)
    result = train_module.train(tiny_config(ROBUST, epochs=1), tmp_path / "run")
    seen = [targets for targets in seen if targets.is_floating_point()]  # validation's are class indices
    assert math.isfinite(result["last"]["loss"]) and len(seen) == 2  # 36 clouds, batches of 16
    for targets in seen:
        assert targets.shape == (16, 9) and targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(16))
    assert any((targets.max(1).values < 1).any() for targets in seen), "no batch was mixed"


def test_resume_after_sigkill_is_bit_exact_with_mixing(tmp_path):
    import os
    import subprocess
    import sys

    from test_train import REPO, _tiny_overrides, assert_same_weights, final_weights, tiny_config

    from pointea.engine.train import KILL_AFTER_STEPS_ENV, resume_training, train

    overrides = ["train.deterministic=true", ROBUST]
    train(tiny_config(*overrides), tmp_path / "full")
    killed = tmp_path / "killed"
    script = ("import sys; from pointea.config import load_config; from pointea.engine.train import train; "
              "train(load_config(None, sys.argv[2:]), sys.argv[1])")
    process = subprocess.run([sys.executable, "-c", script, str(killed), *_tiny_overrides(*overrides)],
                             env=dict(os.environ, **{KILL_AFTER_STEPS_ENV: "3"}), cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == -9, process.stderr  # killed in the second of two epochs
    resume_training(killed)
    assert_same_weights(final_weights(tmp_path / "full"), final_weights(killed))


def test_random_apply_chooses_whole_clouds_with_probability_p():
    batch = _item(N=32, batch=400)
    out = RandomApply(ShufflePoints(generator=_gen(1)), 0.3, generator=_gen(2))(batch)
    unchanged = (out["points"] == batch["points"]).all(dim=(1, 2))
    assert 0.6 < unchanged.float().mean() < 0.8  # about 1 - p of the clouds pass untouched
    shuffled = ShufflePoints(generator=_gen(1))(batch)
    changed = ~unchanged
    assert torch.equal(out["points"][changed], shuffled["points"][changed])  # the others: whole, transformed
    assert torch.equal(out["parts"][changed], shuffled["parts"][changed])  # per-point keys follow their cloud
    assert torch.equal(out["parts"][unchanged], batch["parts"][unchanged])
    for p, expected in ((0.0, batch), (1.0, shuffled)):
        result = RandomApply(ShufflePoints(generator=_gen(1)), p, generator=_gen(2))(batch)
        assert torch.equal(result["points"], expected["points"])


def test_random_apply_refuses_shape_changes_and_bad_probabilities():
    with pytest.raises(ValueError, match="RandomApply needs shape-preserving transforms"):
        RandomApply(RandomSubsample(8), 1.0)(_item(N=32, batch=2))
    with pytest.raises(ValueError, match="p must be in"):
        RandomApply(RandomJitter(), 1.5)
