"""Vectorised software renderer of studio crops (torch, CPU or GPU).

The body is a set of tapered capsules (limbs, torso halves, neck) and a sphere (head). Each
capsule's axis end points and radii are projected with the full camera model (perspective and
lens distortion); inside the image a pixel belongs to a capsule when it lies within the
interpolated projected radius of the axis, and its depth is the axis depth minus the capsule's
bulge towards the camera. A per-pixel depth test orders overlapping parts, and Lambert shading
uses the bulge as the surface normal. The background is ray-cast per pixel against the studio
floor (a checkerboard in world coordinates) and the walls, so every camera sees its own part
of the same studio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metricpose.cameras import Camera, crop_intrinsics, pixels_to_rays, project_points
from metricpose.studio.body import Subject

# Capsules as (start, end, start radius mm, end radius mm, look). Start/end name a joint index
# or a derived point (see _derived_points); looks: see _looks.
_CAPSULES: tuple[tuple, ...] = (
    ("torso_left_low", "torso_left_high", 100, 95, "shirt"),
    ("torso_right_low", "torso_right_high", 100, 95, "shirt"),
    (4, 1, 92, 92, "trousers"),
    (1, 2, 80, 55, "trousers"),
    (4, 5, 80, 55, "trousers"),
    (2, 3, 50, 40, "shin"),
    (5, 6, 50, 40, "shin"),
    (3, "toe_right", 42, 36, "shoes"),
    (6, "toe_left", 42, 36, "shoes"),
    (14, 15, 50, 42, "shirt"),
    (11, 12, 50, 42, "shirt"),
    (15, 16, 40, 32, "forearm"),
    (12, 13, 40, 32, "forearm"),
    (16, "hand_right", 36, 30, "skin"),
    (13, "hand_left", 36, 30, "skin"),
    (8, 9, 52, 48, "skin"),
    ("head_centre", "head_centre", 100, 100, "head"),
)
NUM_PRIMITIVES = len(_CAPSULES)
_HEAD = NUM_PRIMITIVES - 1
LIGHT_DIR_WORLD = np.array([0.35, -0.45, 1.0]) / np.linalg.norm([0.35, -0.45, 1.0])


def _derived_points(joints: np.ndarray, rotations: np.ndarray) -> dict[str, np.ndarray]:
    """Points that orient feet, hands and head. joints (N, 17, 3), rotations (N, 17, 3, 3)."""

    def along(j: int, offset: tuple[float, float, float]) -> np.ndarray:
        return joints[:, j] + rotations[:, j] @ np.asarray(offset)

    def mix(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
        return a + w * (b - a)

    return {
        "toe_right": along(3, (0.0, 150.0, -55.0)),
        "toe_left": along(6, (0.0, 150.0, -55.0)),
        "hand_right": along(16, (0.0, 0.0, -85.0)),
        "hand_left": along(13, (0.0, 0.0, -85.0)),
        "head_centre": mix(joints[:, 10], joints[:, 9], 0.75),
        "torso_left_low": mix(joints[:, 0], joints[:, 4], 0.5),
        "torso_right_low": mix(joints[:, 0], joints[:, 1], 0.5),
        "torso_left_high": mix(joints[:, 8], joints[:, 11], 0.5),
        "torso_right_high": mix(joints[:, 8], joints[:, 14], 0.5),
    }


def _looks(subject: Subject) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-primitive base colour (M, 3), stripe colour (M, 3) and stripe count (M,)."""
    shirt = (subject.shirt, subject.shirt_stripes, subject.stripe_period)
    plain = {
        "trousers": subject.trousers,
        "shin": subject.skin if subject.shorts else subject.trousers,
        "shoes": subject.shoes,
        "skin": subject.skin,
        "head": subject.skin,
    }
    base, second, period = [], [], []
    for *_, look in _CAPSULES:
        if look == "shirt" or (look == "forearm" and subject.long_sleeves):
            base.append(shirt[0]), second.append(shirt[1]), period.append(shirt[2])
        else:
            colour = subject.skin if look == "forearm" else plain[look]
            base.append(colour), second.append(colour), period.append(0.0)
    return np.array(base), np.array(second), np.array(period)


@dataclass
class Studio:
    """The room: floor checkerboard and wall panels, drawn from a seed."""

    floor_colours: np.ndarray  # (2, 3)
    wall_colours: np.ndarray  # (8, 3): one per 45° sector of azimuth
    floor_radius_mm: float = 5500.0
    tile_mm: float = 600.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> Studio:
        base = rng.uniform(60, 200, size=3)
        return cls(
            floor_colours=np.stack([base, base * rng.uniform(0.6, 0.85)]),
            wall_colours=rng.uniform(40, 230, size=(8, 3)),
        )


class CameraBackdrop:
    """The studio as one camera sees it, ray-cast once at full resolution.

    Holds per full-image pixel the RGB colour and, where the ray hits the floor, the floor
    point (world mm), so that crops only resample it and add the body's soft shadow.
    """

    def __init__(self, studio: Studio, camera: Camera) -> None:
        h, w = camera.height, camera.width
        v, u = np.meshgrid(
            np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij"
        )
        rays_cam = pixels_to_rays(np.stack([u, v], -1), camera.K, camera.dist, camera.dist_model)
        rays = rays_cam @ camera.R  # world directions (Rᵀ d, as row vectors)
        centre = camera.center_world
        s = -centre[2] / np.minimum(rays[..., 2], -1e-9)
        hit = centre[:2] + s[..., None] * rays[..., :2]
        on_floor = (rays[..., 2] < 0) & (np.linalg.norm(hit, axis=-1) < studio.floor_radius_mm)
        tiles = np.floor(hit[..., 0] / studio.tile_mm) + np.floor(hit[..., 1] / studio.tile_mm)
        floor = studio.floor_colours[(tiles % 2).astype(int)]
        azimuth = np.arctan2(rays[..., 1], rays[..., 0])
        sector = np.clip(((azimuth + np.pi) / (np.pi / 4)).astype(int), 0, 7)
        stripes = 0.85 + 0.15 * (np.sin(azimuth * 60) > 0)
        height_shade = 0.75 + 0.25 * rays[..., 2] / np.linalg.norm(rays, axis=-1)
        wall = studio.wall_colours[sector] * (stripes * height_shade)[..., None]
        colour = np.where(on_floor[..., None], floor, wall)
        # (1, 6, H, W) for grid_sample: RGB, floor x, floor y (mm), on-floor weight.
        maps = np.concatenate(
            [colour, np.where(on_floor[..., None], hit, 0.0), on_floor[..., None]], -1
        )
        self.maps = torch.as_tensor(maps, dtype=torch.float32).permute(2, 0, 1)[None]
        self.width, self.height = w, h

    def crops(self, boxes: np.ndarray, size: int, shadow_xy_mm: np.ndarray) -> torch.Tensor:
        """Background crops (N, S, S, 3) float RGB for boxes (N, 4) px, with a soft shadow
        around the floor points shadow_xy_mm (N, 2)."""
        scale = (boxes[:, 2] - boxes[:, 0]) / size
        grid = (np.arange(size) + 0.5)[None, :] * scale[:, None] - 0.5  # (N, S) full-image px
        gx = (boxes[:, 0, None] + grid) * 2 / (self.width - 1) - 1  # align_corners=True coords
        gy = (boxes[:, 1, None] + grid) * 2 / (self.height - 1) - 1
        n = len(boxes)
        sample_grid = torch.stack(
            [torch.as_tensor(gx, dtype=torch.float32)[:, None, :].expand(n, size, size),
             torch.as_tensor(gy, dtype=torch.float32)[:, :, None].expand(n, size, size)], -1
        )  # fmt: skip
        maps = torch.nn.functional.grid_sample(
            self.maps.expand(n, -1, -1, -1),
            sample_grid,
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        ).permute(0, 2, 3, 1)
        d2 = (
            (maps[..., 3:5] - torch.as_tensor(shadow_xy_mm, dtype=torch.float32)[:, None, None])
            ** 2
        ).sum(-1)
        return (
            maps[..., :3] * (1 - 0.35 * maps[..., 5] * torch.exp(-d2 / (2 * 350.0**2)))[..., None]
        )


def render_body(
    joints_cam: np.ndarray,
    rotations_cam: np.ndarray,
    subject: Subject,
    K_crop: np.ndarray,
    camera: Camera,
    size: int,
    background: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the subject over a background.

    Args:
        joints_cam: (N, 17, 3) joints in the camera frame, mm.
        rotations_cam: (N, 17, 3, 3) global joint rotations in the camera frame.
        K_crop: (N, 3, 3) crop intrinsics.
        background: (N, S, S, 3) float RGB, contiguous; drawn over in place.

    Returns:
        ``background`` with the subject drawn, float RGB 0-255; (N, S, S) bool, the pixels the
        subject covers (its silhouette).
    """
    extra = _derived_points(joints_cam, rotations_cam)

    def point(key) -> np.ndarray:
        return joints_cam[:, key] if isinstance(key, int) else extra[key]

    A = np.stack([point(c[0]) for c in _CAPSULES], 1)  # (N, M, 3)
    B = np.stack([point(c[1]) for c in _CAPSULES], 1)
    radii = np.array([[c[2], c[3]] for c in _CAPSULES]) * subject.width  # (M, 2) mm
    radii[_HEAD] /= subject.width  # heads do not scale with girth
    radii[_HEAD] *= subject.lengths_mm["head"] / 115.0

    dist = torch.as_tensor(camera.dist)
    Kc = torch.as_tensor(K_crop)
    a_px = project_points(torch.as_tensor(A), Kc, dist, camera.dist_model).float()
    b_px = project_points(torch.as_tensor(B), Kc, dist, camera.dist_model).float()
    focal = torch.as_tensor(K_crop[:, 0, 0])[:, None]
    za, zb = torch.as_tensor(A[..., 2]), torch.as_tensor(B[..., 2])
    rw = torch.as_tensor(radii)
    ra_px = (focal * rw[:, 0] / za).float()[..., None]  # (N, M, 1)
    rb_px = (focal * rw[:, 1] / zb).float()[..., None]

    n_frames, n_prims = a_px.shape[:2]
    # Each primitive is tested only on the pixels of its projected bounding box (a limb covers
    # a few per cent of the crop): the (frame, primitive, pixel) triples are listed sparsely.
    reach = torch.maximum(ra_px, rb_px)  # (N, M, 1) px
    lo = (torch.minimum(a_px, b_px) - reach).ceil_().clamp_(0, size)  # (N, M, 2) first x, y
    hi = (torch.maximum(a_px, b_px) + reach).floor_().clamp_(-1, size - 1)
    extent = (hi - lo + 1).clamp_(min=0).long()  # (N, M, 2) box width, height
    counts = (extent[..., 0] * extent[..., 1]).flatten()
    pair = torch.repeat_interleave(torch.arange(n_frames * n_prims), counts)  # (T,)
    local = torch.arange(len(pair)) - (torch.cumsum(counts, 0) - counts)[pair]
    width = extent[..., 0].flatten()[pair]
    x = lo[..., 0].flatten()[pair] + (local % width)  # (T,) pixel column
    y = lo[..., 1].flatten()[pair] + (local // width)

    def per_entry(v: torch.Tensor) -> torch.Tensor:
        """(N, M) or (N, M, 1) per-primitive values -> (T,) per triple."""
        return v.reshape(-1)[pair]

    ax, ay = per_entry(a_px[..., 0]), per_entry(a_px[..., 1])
    abx, aby = per_entry(b_px[..., 0]) - ax, per_entry(b_px[..., 1]) - ay
    inv_len2 = 1.0 / (abx * abx + aby * aby).clamp(min=1e-6)
    dx, dy = x - ax, y - ay
    t = torch.addcmul(dx * abx, dy, aby).mul_(inv_len2).clamp_(0.0, 1.0)
    dx.addcmul_(t, abx, value=-1.0)  # offset from the closest axis point, px
    dy.addcmul_(t, aby, value=-1.0)
    ra = per_entry(ra_px)
    r = torch.addcmul(ra, t, per_entry(rb_px) - ra)
    bulge = torch.addcmul(dx * dx, dy, dy).div_(r).div_(r).neg_().add_(1.0)  # 1 - d²/r²
    inside = (bulge > 0).nonzero()[:, 0]
    pair, x, y, t, dx, dy, r = (v[inside] for v in (pair, x, y, t, dx, dy, r))
    bulge = bulge[inside].sqrt_()
    frame, prim = pair // n_prims, pair % n_prims
    rw32 = rw.float()
    r_mm = torch.addcmul(rw32[prim, 0], t, rw32[prim, 1] - rw32[prim, 0])
    za32, zb32 = za.float().flatten()[pair], zb.float().flatten()[pair]
    depth = torch.addcmul(za32, t, zb32 - za32).sub_(bulge * r_mm)

    # Depth test: per pixel the nearest primitive (the lowest index among exact ties).
    pixel = frame * size * size + y.long() * size + x.long()
    nearest = torch.full((n_frames * size * size,), float("inf")).scatter_reduce_(
        0, pixel, depth, "amin"
    )
    tied = depth == nearest[pixel]
    first = torch.full_like(nearest, n_prims, dtype=torch.long).scatter_reduce_(
        0, pixel[tied], prim[tied], "amin"
    )
    won = (tied & (prim == first[pixel])).nonzero()[:, 0]  # (K,) one triple per covered pixel
    pixel, frame, best, t, dx, dy, r, bulge = (
        v[won] for v in (pixel, frame, prim, t, dx, dy, r, bulge)
    )

    normal = torch.stack([dx / r, dy / r, -bulge], -1)  # (K, 3) camera frame
    R = torch.as_tensor(camera.R, dtype=torch.float32)
    light = R @ torch.as_tensor(LIGHT_DIR_WORLD, dtype=torch.float32)
    shade = 0.45 + 0.6 * (normal @ light).clamp(min=0.0)

    base, second, period = (torch.as_tensor(v, dtype=torch.float32) for v in _looks(subject))
    stripes = (torch.sin(2 * np.pi * period[best] * t) > 0).float()[..., None]
    colour = base[best] + stripes * (second[best] - base[best])

    # Head: skin on the face, hair on top and at the back, two dark eyes.
    rot = torch.as_tensor(rotations_cam[:, 9], dtype=torch.float32)[frame]  # neck/nose frame
    right, forward, up = rot[..., 0], rot[..., 1], rot[..., 2]
    nf, nu, nr = ((normal * axis).sum(-1) for axis in (forward, up, right))
    is_head = best == _HEAD
    hair = is_head & ((nf < -0.05) | (nu > 0.6))
    eyes = is_head & (nf > 0.75) & (nu > 0.05) & (nu < 0.3) & (nr.abs() > 0.12) & (nr.abs() < 0.42)
    hair_colour = torch.as_tensor(subject.hair, dtype=torch.float32)
    colour = torch.where(hair[..., None], hair_colour, colour)
    colour = torch.where(eyes[..., None], torch.full_like(colour, 25.0), colour)

    background.view(-1, 3)[pixel] = (colour * shade[..., None]).clamp(0, 255)
    silhouette = torch.zeros(n_frames * size * size, dtype=torch.bool)
    silhouette[pixel] = True
    return background, silhouette.view(n_frames, size, size)


#: The studio's person box: the projected joints' extent times this. The converters' and
#: inference's boxes use ``imaging.BOX_MARGIN`` (1.25); the studio's 1.3 is older, and every
#: studio and every number in docs/ was rendered with it, so it stays, named apart.
STUDIO_BOX_MARGIN = 1.3


def person_boxes(
    joints_world: np.ndarray, camera: Camera, margin: float = STUDIO_BOX_MARGIN
) -> np.ndarray:
    """Square person-centred boxes from the projected skeleton.

    Args:
        joints_world: (T, 17, 3) mm.
        margin: side / largest extent of the projected joints; leaves room for the body's
            width, head and feet.

    Returns:
        (T, 4) boxes (x0, y0, x1, y1) in full-image px.
    """
    uv = camera.project(joints_world)
    lo, hi = uv.min(1), uv.max(1)
    centre = (lo + hi) / 2
    depth = camera.world_to_camera(joints_world[:, 0])[:, 2]
    min_side = camera.K[0, 0] * 600.0 / depth  # never narrower than 0.6 m at the body
    side = np.maximum((hi - lo).max(1) * margin, min_side)
    return np.concatenate([centre - side[:, None] / 2, centre + side[:, None] / 2], axis=1)


def random_backgrounds(
    n: int, size: int, generator: torch.Generator, out: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, S, S, 3) float RGB: each crop a blend of two random colours along random stripes
    (written into ``out`` when given).

    Behind every crop a fresh one, so that nothing in the background tells the camera, the
    person's place in the room or the take: only the person can tell the pose.
    """

    def uniform(*shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=generator)

    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    angle = uniform(n, 1, 1, hi=torch.pi)
    frequency = uniform(n, 1, 1, lo=0.05, hi=0.5)  # radians per px
    phase = uniform(n, 1, 1, hi=2 * torch.pi)
    wave = 0.5 + 0.5 * torch.sin(frequency * (xx * angle.cos() + yy * angle.sin()) + phase)
    mix = (wave * uniform(n, 1, 1))[..., None]
    first, second = uniform(n, 1, 1, 3, lo=20, hi=235), uniform(n, 1, 1, 3, lo=20, hi=235)
    return torch.add(first * (1 - mix), second * mix, out=out)


def render_take(
    subject: Subject,
    backdrop: CameraBackdrop | None,
    camera: Camera,
    joints_world: np.ndarray,
    rotations_world: np.ndarray,
    size: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one camera's view of a take (:func:`render_takes` for one take).

    Returns:
        crops (T, S, S, 3) uint8, boxes (T, 4) float px and silhouettes (T, S, S) bool.
    """
    return render_takes(subject, backdrop, camera, [(joints_world, rotations_world, seed)], size)[0]


def render_takes(
    subject: Subject,
    backdrop: CameraBackdrop | None,
    camera: Camera,
    takes: list[tuple[np.ndarray, np.ndarray, int]],
    size: int,
    chunk: int = 32,
    batch: int = 256,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Render one camera's view of several takes of one person, in front of the studio as
    ``backdrop`` shows it, or with ``backdrop`` None in front of a random background per crop
    (:func:`random_backgrounds`).

    Each take draws its backgrounds and sensor noise from its own ``seed``, ``chunk`` frames
    at a time, so its crops do not depend on the takes rendered with it; the bodies are drawn
    ``batch`` frames per call across takes (16 frames per call drew 2.4k frames/s, 256 drew
    4-5k: the per-operation overhead of small tensors). Memory grows with the takes given
    (backgrounds and noise of all of them): the caller passes a bounded number.

    Args:
        takes: per take (T, 17, 3) world joints, mm; (T, 17, 3, 3) global joint rotations in
            the world frame; the seed of its random streams.

    Returns:
        per take, crops (T, S, S, 3) uint8, boxes (T, 4) float px and the person's silhouettes
        (T, S, S) bool (the masks that background subtraction or a chroma key give on real
        captures).
    """
    joints_world = np.concatenate([joints for joints, _, _ in takes])
    rotations_world = np.concatenate([rotations for _, rotations, _ in takes])
    boxes = person_boxes(joints_world, camera)
    shape = (len(joints_world), size, size, 3)
    background = (
        torch.empty(shape)
        if backdrop is None
        else backdrop.crops(boxes, size, joints_world[:, 0, :2]).contiguous()
    )
    noise = torch.empty(shape)
    row = 0
    for joints, _, seed in takes:  # drawn into their rows, in each take's own stream order
        generator = torch.Generator().manual_seed(seed)
        for s in range(0, len(joints), chunk):
            rows = slice(row, row + len(joints[s : s + chunk]))
            if backdrop is None:
                random_backgrounds(rows.stop - rows.start, size, generator, out=background[rows])
            torch.randn(noise[rows].shape, generator=generator, out=noise[rows]).mul_(3.0)
            row = rows.stop
    K_crop = crop_intrinsics(camera.K, boxes, size)
    joints_cam = camera.world_to_camera(joints_world)
    rotations_cam = camera.R @ rotations_world
    crops = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    silhouettes = np.empty((len(boxes), size, size), dtype=bool)
    for s in range(0, len(boxes), batch):
        sl = slice(s, s + batch)
        img, silhouettes[sl] = render_body(
            joints_cam[sl], rotations_cam[sl], subject, K_crop[sl], camera, size, background[sl]
        )
        crops[sl] = img.add_(noise[sl]).round_().clamp_(0, 255).to(torch.uint8).numpy()
    ends = np.cumsum([len(joints) for joints, _, _ in takes])[:-1]
    split = (np.split(a, ends) for a in (crops, boxes, silhouettes))
    return list(zip(*split, strict=True))
