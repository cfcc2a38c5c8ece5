"""Parametric motions of the synthetic studio.

Each action is a smooth function of time giving joint angles (degrees: flexion about the
body's x axis, abduction about y, twist about z; see ``body.euler_to_matrix``), a path on the
floor and a heading. Every take draws its own amplitude, speed, phase, heading and path, plus
slow low-amplitude wobble on every joint, so no two takes are alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from metricpose.skeleton import JOINT_NAMES
from metricpose.studio.body import Subject, euler_to_matrix, forward_kinematics

J = {name: index for index, name in enumerate(JOINT_NAMES)}

#: (min, max) degrees of (flexion, abduction, twist) for each joint, as Pose.set takes them.
JOINT_LIMITS_DEG: dict[str, tuple[tuple[float, float], ...]] = {
    "root": ((-30, 80), (-30, 30), (-45, 45)),
    "hip": ((-40, 130), (-15, 60), (-40, 40)),
    "knee": ((-150, 0), (0, 0), (-10, 10)),
    "spine": ((-25, 70), (-35, 35), (-45, 45)),
    "thorax": ((-20, 40), (-20, 20), (-30, 30)),
    "neck": ((-40, 50), (-30, 30), (-70, 70)),
    "shoulder": ((-60, 180), (-20, 180), (-60, 90)),
    "elbow": ((0, 150), (0, 0), (-30, 30)),
}
_LIMIT_OF_JOINT = {
    "pelvis": "root", "right_hip": "hip", "left_hip": "hip", "right_knee": "knee", "left_knee": "knee",
    "spine": "spine", "thorax": "thorax", "neck_nose": "neck", "left_shoulder": "shoulder",
    "right_shoulder": "shoulder", "left_elbow": "elbow", "right_elbow": "elbow",
}  # fmt: skip

ANKLE_HEIGHT_MM = 80.0
_UPWARD = ("pelvis", "spine", "thorax", "neck_nose")


@dataclass
class TakeParams:
    """Random variation of one take."""

    amplitude: float
    speed: float
    phase: float  # radians
    heading: float  # radians, body yaw at the start
    start_xy: np.ndarray  # (2,) mm
    side: int  # +1 right, -1 left: which arm or leg leads one-sided actions


class Pose:
    """Angle tracks being built for one take: ``angles[name]`` is (T, 3) degrees."""

    def __init__(self, T: int) -> None:
        self.T = T
        self.angles = {name: np.zeros((T, 3)) for name in J}
        self.root_xy = np.zeros((T, 2))
        self.yaw = np.zeros(T)
        self.lift_mm = np.zeros(T)  # extra height above the ground contact (jumps)

    def set(self, name: str, flex=0.0, abd=0.0, twist=0.0) -> None:
        """Add angles (degrees); abd and twist are mirrored for the right side.

        Positive flexion moves a limb forward; for the upward chain (root, spine, thorax, neck)
        it bends forward too, which is a negative rotation about x for bones that point up.
        """
        mirror = -1.0 if name.startswith("right_") else 1.0
        a = self.angles[name]
        a[:, 0] += -flex if name in _UPWARD else flex
        a[:, 1] += mirror * np.asarray(abd)
        a[:, 2] += mirror * np.asarray(twist)

    def lean(self, forward_deg) -> None:
        """Tilt the trunk forward about the hips, leaving the legs' direction unchanged."""
        self.set("pelvis", flex=forward_deg)
        self.set("right_hip", flex=forward_deg)
        self.set("left_hip", flex=forward_deg)

    def limb(self, side: int, part: str, **kw) -> None:
        """Like set() for 'hip', 'knee', 'shoulder', 'elbow' of side +1 (right) / -1 (left)."""
        self.set(("right_" if side > 0 else "left_") + part, **kw)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _pulse(phase: np.ndarray) -> np.ndarray:
    """Smooth periodic pulse in [0, 1] peaking once per 2π."""
    return 0.5 - 0.5 * np.cos(phase)


def _walk_gait(p: Pose, ph: np.ndarray, amp: float) -> None:
    swing = np.sin(ph)
    for side, sign in ((1, 1.0), (-1, -1.0)):
        p.limb(side, "hip", flex=sign * 25 * amp * swing)
        p.limb(side, "knee", flex=-35 * amp * (1 + np.sin(sign * ph + np.pi / 2)) / 2 - 5)
        p.limb(side, "shoulder", flex=-sign * 20 * amp * swing, abd=8)
        p.limb(side, "elbow", flex=20 + 10 * amp * (1 - sign * swing))


def walking(p: Pose, t: np.ndarray, k: TakeParams) -> None:
    ph = 2 * np.pi * 0.9 * k.speed * t + k.phase
    _walk_gait(p, ph, k.amplitude)
    p.lean(4)
    direction = np.array([-np.sin(k.heading), np.cos(k.heading)])
    speed_mm_s = 1000 * k.speed * (0.7 + 0.3 * k.amplitude)
    travel = speed_mm_s * (t - t[-1] / 2)
    p.root_xy = k.start_xy + travel[:, None] * direction
    p.yaw[:] = k.heading
    p.lift_mm += 15 * np.abs(np.cos(ph))


def turning(p: Pose, t: np.ndarray, k: TakeParams) -> None:
    ph = 2 * np.pi * 0.8 * k.speed * t + k.phase
    _walk_gait(p, ph, 0.6 * k.amplitude)
    radius = 900 * k.amplitude
    ang = k.heading + k.side * 0.9 * k.speed * t
    centre = k.start_xy
    p.root_xy = centre + radius * np.stack([np.cos(ang), np.sin(ang)], -1)
    p.yaw[:] = ang + (np.pi if k.side > 0 else 0.0)
    p.set("neck_nose", twist=k.side * 15)


def waving(p: Pose, t: np.ndarray, k: TakeParams) -> None:
    ph = 2 * np.pi * 1.4 * k.speed * t + k.phase
    p.limb(k.side, "shoulder", flex=30, abd=110 + 30 * k.amplitude)
    p.limb(k.side, "elbow", flex=55 + 35 * k.amplitude * np.sin(ph))
    p.limb(-k.side, "elbow", flex=10)
    p.set("spine", abd=-k.side * 6 * np.sin(ph / 2))
    p.set("neck_nose", twist=10 * np.sin(ph / 3))
    p.yaw[:] = k.heading
    p.root_xy[:] = k.start_xy


def reaching(p: Pose, t: np.ndarray, k: TakeParams) -> None:
    reach = _pulse(2 * np.pi * 0.45 * k.speed * t + k.phase)
    p.limb(k.side, "shoulder", flex=10 + 110 * k.amplitude * reach, abd=10)
    p.limb(k.side, "elbow", flex=60 * (1 - reach) + 5)
    p.limb(-k.side, "shoulder", flex=20 * reach)
    p.set("spine", flex=30 * k.amplitude * reach, twist=-k.side * 15 * reach)
    p.lean(10 * reach)
    p.yaw[:] = k.heading
    p.root_xy[:] = k.start_xy


def squatting(p: Pose, t: np.ndarray, k: TakeParams) -> None:
    down = _pulse(2 * np.pi * 0.4 * k.speed * t + k.phase)
    depth = k.amplitude * down
    for side in (1, -1):
        p.limb(side, "hip", flex=95 * depth, abd=12 * depth)
        p.limb(side, "knee", flex=-120 * depth)
        p.limb(side, "shoulder", flex=70 * depth)
        p.limb(side, "elbow", flex=10 + 20 * depth)
    p.lean(25 * depth)
    p.set("neck_nose", flex=-20 * depth)
    p.yaw[:] = k.heading
    p.root_xy[:] = k.start_xy


def bending(p: Pose, t: np.ndarray, k: TakeParams) -> None:
    bend = _pulse(2 * np.pi * 0.35 * k.speed * t + k.phase) * k.amplitude
    p.lean(45 * bend)
    p.set("spine", flex=40 * bend)
    p.set("neck_nose", flex=-25 * bend)
    for side in (1, -1):
        p.limb(side, "hip", flex=-5 * bend)
        p.limb(side, "shoulder", flex=25 * bend)
        p.limb(side, "elbow", flex=10)
    p.yaw[:] = k.heading
    p.root_xy[:] = k.start_xy


def sitting_down(p: Pose, t: np.ndarray, k: TakeParams) -> None:
    span = t[-1] if t[-1] > 0 else 1.0
    sit = _smoothstep((t / span - 0.2) / (0.35 / k.speed) + k.phase / (4 * np.pi))
    for side in (1, -1):
        p.limb(side, "hip", flex=(95 - 10 * k.side * side) * sit, abd=8 * sit)
        p.limb(side, "knee", flex=-(90 + 15 * k.amplitude) * sit)
        p.limb(side, "shoulder", flex=25 * sit, abd=5)
        p.limb(side, "elbow", flex=20 + 50 * sit)
    p.lean(10 * sit)
    p.set("spine", flex=10 * sit)
    p.yaw[:] = k.heading
    p.root_xy[:] = k.start_xy


def kicking(p: Pose, t: np.ndarray, k: TakeParams) -> None:
    kick = _pulse(2 * np.pi * 0.6 * k.speed * t + k.phase) ** 2
    p.limb(k.side, "hip", flex=85 * k.amplitude * kick)
    p.limb(k.side, "knee", flex=-70 * (1 - kick) * kick * 4 - 5)
    for side in (1, -1):
        p.limb(side, "shoulder", abd=35, flex=-side * k.side * 20 * kick)
        p.limb(side, "elbow", flex=40)
    p.lean(-10 * kick)
    p.yaw[:] = k.heading
    p.root_xy[:] = k.start_xy


def stretching(p: Pose, t: np.ndarray, k: TakeParams) -> None:
    ph = 2 * np.pi * 0.3 * k.speed * t + k.phase
    up = _pulse(ph)
    for side in (1, -1):
        p.limb(side, "shoulder", flex=40 * up, abd=60 + 100 * up)
        p.limb(side, "elbow", flex=30 * (1 - up))
    p.set("spine", abd=25 * k.amplitude * np.sin(ph / 2) * up)
    p.set("thorax", abd=10 * k.amplitude * np.sin(ph / 2) * up)
    p.yaw[:] = k.heading
    p.root_xy[:] = k.start_xy


def jumping(p: Pose, t: np.ndarray, k: TakeParams) -> None:
    ph = 2 * np.pi * 0.7 * k.speed * t + k.phase
    crouch = np.clip(-np.sin(ph), 0, None) * k.amplitude
    air = np.clip(np.sin(ph), 0, None)
    for side in (1, -1):
        p.limb(side, "hip", flex=55 * crouch + 10 * air)
        p.limb(side, "knee", flex=-85 * crouch - 20 * air)
        p.limb(side, "shoulder", flex=-40 * crouch + 150 * air * k.amplitude, abd=10)
        p.limb(side, "elbow", flex=15)
    p.lean(25 * crouch)
    p.lift_mm += 280 * k.amplitude * air
    p.yaw[:] = k.heading
    p.root_xy[:] = k.start_xy


def boxing(p: Pose, t: np.ndarray, k: TakeParams) -> None:
    ph = 2 * np.pi * 0.8 * k.speed * t + k.phase
    for side, offset in ((1, 0.0), (-1, np.pi)):
        punch = _pulse(ph + offset) ** 3
        p.limb(side, "shoulder", flex=55 + 30 * punch * k.amplitude, abd=25 - 15 * punch)
        p.limb(side, "elbow", flex=130 - 115 * punch)
        p.limb(side, "hip", flex=20)
        p.limb(side, "knee", flex=-30)
    p.set("spine", twist=20 * np.sin(ph) * k.amplitude)
    p.lean(10)
    p.yaw[:] = k.heading
    p.root_xy[:] = k.start_xy


def phoning(p: Pose, t: np.ndarray, k: TakeParams) -> None:
    ph = 2 * np.pi * 0.25 * k.speed * t + k.phase
    p.limb(k.side, "shoulder", flex=35, abd=35)
    p.limb(k.side, "elbow", flex=140)
    p.limb(-k.side, "shoulder", flex=10 * np.sin(ph))
    p.limb(-k.side, "elbow", flex=30 + 40 * _pulse(ph * 2))
    p.set("neck_nose", twist=45 * k.amplitude * np.sin(ph), flex=10)
    p.set("spine", twist=10 * np.sin(ph))
    walk = 0.4 * np.sin(ph)
    p.root_xy = k.start_xy + 600 * np.stack([walk, 0 * walk], -1)
    p.yaw[:] = k.heading + 0.6 * np.sin(ph / 2)


ACTIONS: dict[str, Callable[[Pose, np.ndarray, TakeParams], None]] = {
    f.__name__: f
    for f in (
        walking, turning, waving, reaching, squatting, bending, sitting_down, kicking,
        stretching, jumping, boxing, phoning,
    )
}  # fmt: skip


@dataclass
class MotionStyle:
    """How one person moves, in every take: a larger or smaller range of motion, a faster or
    slower tempo, and a habitual posture (degrees added to each joint's angles, as Pose.set
    takes them) — a stoop, arms held out or bent, a wide stance, bent knees. People differ
    like this, so one person's labelled poses do not cover another's."""

    amplitude: float
    speed: float
    posture_deg: dict[str, np.ndarray]  # joint name -> (3,) flexion, abduction, twist


#: Standard deviation (degrees) of the habitual offset of (flexion, abduction, twist) per joint.
_POSTURE_SPREAD_DEG = {
    "root": (6, 3, 0), "spine": (8, 5, 5), "thorax": (6, 4, 4), "neck": (10, 6, 10),
    "hip": (6, 5, 4), "knee": (8, 0, 0), "shoulder": (12, 14, 10), "elbow": (18, 0, 8),
}  # fmt: skip


def draw_style(rng: np.random.Generator, strength: float = 1.0) -> MotionStyle:
    """A person's motion style; ``strength`` scales every deviation from the neutral one (0:
    everyone moves alike). Left and right differ a little, as in people."""
    posture, habit = {}, {}
    for name, key in _LIMIT_OF_JOINT.items():
        spread = np.asarray(_POSTURE_SPREAD_DEG[key], dtype=float)
        if key not in habit:  # both sides share the habit (Pose.set mirrors it), plus a little
            habit[key] = rng.normal(0.0, spread)
        offset = habit[key] + rng.normal(0.0, 0.3 * spread)
        if key in ("knee", "elbow"):  # these bend one way only
            offset[0] = -abs(offset[0]) if key == "knee" else abs(offset[0])
        posture[name] = strength * offset
    return MotionStyle(
        amplitude=float(np.exp(strength * rng.normal(0.0, 0.2))),
        speed=float(np.exp(strength * rng.normal(0.0, 0.12))),
        posture_deg=posture,
    )


def draw_take_params(rng: np.random.Generator) -> TakeParams:
    return TakeParams(
        amplitude=float(rng.uniform(0.7, 1.2)),
        speed=float(rng.uniform(0.75, 1.3)),
        phase=float(rng.uniform(0, 2 * np.pi)),
        heading=float(rng.uniform(0, 2 * np.pi)),
        start_xy=rng.uniform(-600, 600, size=2),
        side=int(rng.choice([-1, 1])),
    )


def _clip_to_limits(angles: dict[str, np.ndarray]) -> None:
    for name, limit_key in _LIMIT_OF_JOINT.items():
        lim = np.asarray(JOINT_LIMITS_DEG[limit_key])
        # Limits are stated as Pose.set takes angles: forward flexion positive, left side.
        sign = np.array(
            [
                -1.0 if name in _UPWARD else 1.0,
                *([-1.0] * 2 if name.startswith("right_") else [1.0] * 2),
            ]
        )
        a = angles[name]
        a[:] = sign * np.clip(sign * a, lim[:, 0], lim[:, 1])


def generate_take(
    subject: Subject,
    action: str,
    num_frames: int,
    fps: float,
    rng: np.random.Generator,
    style: MotionStyle | None = None,
) -> dict[str, np.ndarray]:
    """Animate one take, in the subject's motion ``style`` if given.

    Returns a dict with ``joints`` (T, 17, 3) world mm, ``rotations`` (T, 17, 3, 3) global joint
    rotations (they orient the feet, hands and face for rendering) and ``angles_deg``
    (T, 17, 3) local joint angles after the joint limits.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; available: {', '.join(ACTIONS)}")
    t = np.arange(num_frames) / fps
    take = draw_take_params(rng)
    pose = Pose(num_frames)
    if style is not None:
        take = replace(
            take, amplitude=take.amplitude * style.amplitude, speed=take.speed * style.speed
        )
    ACTIONS[action](pose, t, take)
    if style is not None:
        for name, offset in style.posture_deg.items():
            pose.set(name, *offset)
    # Slow wobble on every joint so that repeated cycles and takes differ.
    for name in J:
        freq = rng.uniform(0.1, 0.5, size=3)
        phase = rng.uniform(0, 2 * np.pi, size=3)
        pose.angles[name] += 4.0 * np.sin(2 * np.pi * freq * t[:, None] + phase)
    _clip_to_limits(pose.angles)

    angles = np.stack([pose.angles[name] for name in J], axis=1)  # (T, 17, 3)
    local = euler_to_matrix(np.deg2rad(angles))
    heading = euler_to_matrix(np.stack([np.zeros(num_frames), np.zeros(num_frames), pose.yaw], -1))
    local[:, 0] = heading @ local[:, 0]
    joints, rotations = forward_kinematics(subject.rest_offsets(), local, np.zeros((num_frames, 3)))
    # Stand on the floor: the lower ankle touches it, plus any lift (jumps, gait bounce).
    ground = np.minimum(joints[:, J["right_ankle"], 2], joints[:, J["left_ankle"], 2])
    shift = np.zeros((num_frames, 3))
    shift[:, :2] = pose.root_xy
    shift[:, 2] = ANKLE_HEIGHT_MM - ground + pose.lift_mm
    return {"joints": joints + shift[:, None], "rotations": rotations, "angles_deg": angles}
