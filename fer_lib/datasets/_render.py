"""Procedural face renderer behind the synthetic datasets (numpy + PIL only).

A face is drawn as flat shapes (skin oval, eyes, brows, nose, lips, hair, neck, shoulders) on a
canvas ``SS`` times larger than the output, shaded with a blurred multiplicative layer (face rim,
eye sockets, nose sides, shadow under nose and lip), then downsampled, which anti-aliases it.

Coordinates: every shape is given in *face units* — origin at the centre of the head oval, x to
the image right, y down, 1 unit = half the head height (skull top at y = -1, chin at y = +1) — with
a depth z used by the pose transform (yaw and pitch rotate (x, y, z); roll rotates in the plane).

What controls what:
- ``Identity`` (fixed per person, sampled from an identity seed): gender, ethnicity, skin tone,
  head shape, eye spacing and size, nose, mouth, brows, hair style and colour, beard, clothes.
- ``Look`` (per image): age, expression + intensity (through FACS-like action units), pose,
  gaze, lighting, blur, noise, occlusion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..labels import ETHNICITIES, EXPRESSIONS_8

SS = 3  # supersampling factor of the drawing canvas for small faces
SS_LARGE = 2  # ... and for faces whose head half-height is at least LARGE_FACE output pixels
LARGE_FACE = 40.0

# ------------------------------------------------------------------------------------------- labels
# Valence / arousal prototypes of each canonical expression (EXPRESSIONS_8 order) at full intensity.
VA_PROTOTYPES: dict[str, tuple[float, float]] = {
    "Neutral": (0.0, 0.0),
    "Happy": (0.8, 0.5),
    "Sad": (-0.6, -0.3),
    "Surprise": (0.2, 0.8),
    "Fear": (-0.6, 0.8),
    "Disgust": (-0.7, 0.3),
    "Anger": (-0.6, 0.7),
    "Contempt": (-0.4, 0.2),
}

# FACS-like action units at full intensity for every expression. Names follow FACS numbering:
# 1 inner brow raise, 2 outer brow raise, 4 brow lower, 5 upper lid raise, 6 cheek raise,
# 7 lid tighten, 9 nose wrinkle, 10 upper lip raise, 12 lip corner pull, 14 one-sided dimpler,
# 15 lip corner depress, 17 chin raise, 20 lip stretch, 23 lip tighten, 25 lips part, 26 jaw drop.
AU_PROTOTYPES: dict[str, dict[str, float]] = {
    "Neutral": {},
    "Happy": {"AU6": 0.8, "AU7": 0.2, "AU12": 1.0, "AU25": 0.7},
    "Sad": {"AU1": 1.0, "AU4": 0.5, "AU15": 1.0, "AU17": 0.6, "AU43": 0.35},
    "Surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0, "AU25": 1.0, "AU26": 1.0},
    "Fear": {"AU1": 1.0, "AU2": 0.6, "AU4": 0.7, "AU5": 1.0, "AU20": 1.0, "AU25": 0.9, "AU26": 0.25},
    "Disgust": {"AU4": 0.5, "AU7": 0.4, "AU9": 1.0, "AU10": 1.0, "AU15": 0.4, "AU17": 0.4},
    "Anger": {"AU4": 1.0, "AU5": 0.25, "AU7": 0.9, "AU17": 0.4, "AU23": 1.0},
    "Contempt": {"AU14": 1.0, "AU2R": 0.2},
}
AU_NAMES = (
    "AU1",
    "AU2",
    "AU2R",
    "AU4",
    "AU5",
    "AU6",
    "AU7",
    "AU9",
    "AU10",
    "AU12",
    "AU14",
    "AU15",
    "AU17",
    "AU20",
    "AU23",
    "AU25",
    "AU26",
    "AU43",
)


def valence_arousal(
    expression: int, intensity: float, rng: np.random.Generator | None = None, noise: float = 0.05
) -> tuple[float, float]:
    """Prototype VA of the expression scaled by intensity, plus N(0, noise), clipped to [-1, 1]."""
    v, a = VA_PROTOTYPES[EXPRESSIONS_8[expression]]
    v, a = v * intensity, a * intensity
    if rng is not None and noise > 0:
        v, a = v + rng.normal(0, noise), a + rng.normal(0, noise)
    return float(np.clip(v, -1, 1)), float(np.clip(a, -1, 1))


def action_units(
    expression: int, intensity: float, rng: np.random.Generator | None = None, jitter: float = 0.08
) -> dict[str, float]:
    """Action-unit activations (0..1) of an expression at an intensity, with small random jitter."""
    proto = AU_PROTOTYPES[EXPRESSIONS_8[expression]]
    out = {}
    for name in AU_NAMES:
        value = proto.get(name, 0.0) * intensity
        if rng is not None and jitter > 0:
            value += rng.normal(0, jitter) * (0.5 + value)
        out[name] = float(np.clip(value, 0.0, 1.0))
    return out


# ---------------------------------------------------------------------------------------- identity
# Base skin RGB per ethnicity (ETHNICITIES order: White, Black, Asian, Indian, Others).
_SKIN = np.array([[236, 196, 170], [118, 78, 56], [238, 204, 164], [182, 132, 98], [206, 158, 122]], float)
_SKIN_JITTER = np.array([14, 18, 12, 16, 18], float)
_HAIR_COLOURS = {
    "black": (28, 24, 22),
    "dark_brown": (62, 42, 30),
    "brown": (104, 72, 46),
    "light_brown": (150, 112, 72),
    "blonde": (206, 172, 112),
    "red": (150, 70, 36),
}
_HAIR_BY_RACE = [
    {"dark_brown": 0.25, "brown": 0.3, "light_brown": 0.15, "blonde": 0.2, "red": 0.05, "black": 0.05},
    {"black": 0.9, "dark_brown": 0.1},
    {"black": 0.85, "dark_brown": 0.15},
    {"black": 0.85, "dark_brown": 0.15},
    {"black": 0.45, "dark_brown": 0.45, "brown": 0.1},
]
_IRIS = {"brown": (92, 58, 34), "dark": (48, 32, 24), "blue": (80, 120, 160), "green": (90, 118, 78)}


@dataclass(frozen=True)
class Identity:
    """Fixed appearance of one person (sample with ``Identity.sample``)."""

    seed: int
    gender: int  # 0 male, 1 female (UTKFace convention)
    race: int  # index in labels.ETHNICITIES
    base_age: float
    skin: tuple[float, float, float]
    head_w: float  # half-width of the head oval (half-height is 1)
    jaw: float  # 0 round .. 1 square jaw
    chin: float  # chin taper
    eye_dx: float  # half the distance between the eye centres
    eye_w: float  # half-width of an eye
    eye_h: float  # eye height factor (narrower for some)
    iris: tuple[int, int, int]
    brow_thick: float
    brow_arch: float
    nose_len: float
    nose_w: float
    mouth_w: float
    lip_up: float
    lip_lo: float
    lip_colour: tuple[int, int, int]
    rest_mouth: float  # resting mouth-corner curvature (idiosyncratic, small)
    hair_style: str
    hair_colour: tuple[int, int, int]
    hairline: float  # y of the hairline at the middle of the forehead
    grey_onset: float  # age at which the hair starts to turn grey
    beard: int  # 0 none, 1 stubble, 2 moustache, 3 full beard
    ear: float
    clothes: tuple[int, int, int]

    @staticmethod
    def sample(
        seed: int, gender: int | None = None, race: int | None = None, age: float | None = None
    ) -> Identity:
        """A person drawn deterministically from ``seed`` (gender / race / age may be fixed)."""
        rng = np.random.default_rng([seed, 7919])
        g = int(rng.integers(2)) if gender is None else int(gender)
        r = int(rng.choice(len(ETHNICITIES), p=[0.42, 0.19, 0.15, 0.17, 0.07])) if race is None else int(race)
        a = float(sample_age(rng)) if age is None else float(age)
        # mostly a lightness change around the ethnicity's base tone, with a little hue jitter
        skin = np.clip(
            _SKIN[r] * (1 + rng.normal(0, 1) * _SKIN_JITTER[r] / _SKIN[r].mean()) + rng.normal(0, 4, 3),
            40,
            250,
        )
        hair_names = list(_HAIR_BY_RACE[r])
        hair_p = np.array([_HAIR_BY_RACE[r][k] for k in hair_names])
        hair = np.array(_HAIR_COLOURS[str(rng.choice(hair_names, p=hair_p))], float) * rng.uniform(0.85, 1.12)
        if g == 1:
            styles, p = (
                ["long", "bob", "bun", "medium", "short", "curly"],
                [0.45, 0.18, 0.12, 0.12, 0.06, 0.07],
            )
        else:
            styles, p = ["short", "medium", "receding", "curly", "long"], [0.55, 0.2, 0.12, 0.08, 0.05]
        if r == 1:  # curly / afro textures are more frequent
            p = [pi * (3.0 if s == "curly" else 1.0) for s, pi in zip(styles, p)]
        p = np.array(p) / np.sum(p)
        style = str(rng.choice(styles, p=p))
        iris_names = ["brown", "dark", "blue", "green"] if r == 0 else ["brown", "dark"]
        iris_p = [0.4, 0.2, 0.28, 0.12] if r == 0 else [0.5, 0.5]
        lip = skin * np.array([0.78, 0.55, 0.58]) + np.array([30, 0, 0])
        if g == 1:
            lip = lip * 0.55 + np.array([196, 72, 84]) * 0.45 * rng.uniform(0.7, 1.1)
        male = g == 0
        return Identity(
            seed=int(seed),
            gender=g,
            race=r,
            base_age=a,
            skin=tuple(float(c) for c in skin),
            head_w=float(rng.uniform(0.72, 0.80) + (0.03 if male else 0.0) + (0.03 if r == 2 else 0.0)),
            jaw=float(np.clip(rng.normal(0.65 if male else 0.2, 0.15), 0, 1)),
            chin=float(rng.uniform(0.15, 0.35) + (0.0 if male else 0.1)),
            eye_dx=float(rng.uniform(0.29, 0.35)),
            eye_w=float(rng.uniform(0.105, 0.125)),
            eye_h=float(rng.uniform(0.85, 1.1) * (0.72 if r == 2 else 1.0) * (1.08 if not male else 1.0)),
            iris=_IRIS[str(rng.choice(iris_names, p=iris_p))],
            brow_thick=float(rng.uniform(0.04, 0.055) if male else rng.uniform(0.022, 0.032)),
            brow_arch=float(rng.uniform(0.01, 0.04) + (0.0 if male else 0.02)),
            nose_len=float(rng.uniform(0.30, 0.38) + (0.02 if male else 0.0)),
            nose_w=float(rng.uniform(0.10, 0.13) * (1.3 if r == 1 else 1.0) * (1.05 if male else 1.0)),
            mouth_w=float(rng.uniform(0.18, 0.22) * (1.05 if male else 1.0)),
            lip_up=float(rng.uniform(0.035, 0.05) * (1.35 if r == 1 else 1.0) * (1.15 if not male else 1.0)),
            lip_lo=float(rng.uniform(0.045, 0.06) * (1.3 if r == 1 else 1.0) * (1.15 if not male else 1.0)),
            lip_colour=tuple(int(c) for c in np.clip(lip, 0, 255)),
            rest_mouth=float(rng.normal(0, 0.008)),
            hair_style=style,
            hair_colour=tuple(int(c) for c in np.clip(hair, 0, 255)),
            hairline=float(rng.uniform(-0.62, -0.52)),
            grey_onset=float(rng.uniform(35, 55)),
            beard=int(rng.choice(4, p=[0.55, 0.2, 0.1, 0.15])) if male else 0,
            ear=float(rng.uniform(0.9, 1.1)),
            clothes=tuple(int(c) for c in rng.integers(20, 230, 3)),
        )


def sample_age(rng: np.random.Generator) -> float:
    """An age in [1, 99] from a UTKFace-like mixture (many young adults, some children and elders)."""
    bucket = rng.choice(5, p=[0.1, 0.1, 0.48, 0.22, 0.1])
    lo, hi = [(1, 10), (10, 20), (20, 45), (45, 70), (70, 99)][bucket]
    return float(rng.integers(lo, hi + 1))


@dataclass
class Look:
    """Everything about one picture of a person that is not the identity."""

    age: float
    expression: int = 0
    intensity: float = 0.0
    aus: dict[str, float] = field(default_factory=dict)
    yaw: float = 0.0  # degrees
    pitch: float = 0.0
    roll: float = 0.0
    gaze: float = 0.0  # horizontal iris shift, fraction of the eye half-width
    blink: float = 0.0  # 0 open .. 1 closed

    @staticmethod
    def sample(
        rng: np.random.Generator,
        age: float,
        expression: int,
        intensity: float,
        pose: float = 1.0,
        roll: float = 1.0,
    ) -> Look:
        """A random pose/gaze around the given expression; ``pose`` scales yaw/pitch, ``roll`` roll."""
        return Look(
            age=age,
            expression=expression,
            intensity=intensity,
            aus=action_units(expression, intensity, rng),
            yaw=float(np.clip(rng.normal(0, 9 * pose), -25, 25)),
            pitch=float(np.clip(rng.normal(0, 5 * pose), -15, 15)),
            roll=float(np.clip(rng.normal(0, 6 * roll), -20, 20)),
            gaze=float(rng.normal(0, 0.15)),
        )


# --------------------------------------------------------------------------------------- geometry
class Pose:
    """Maps face units (x, y, depth z) to canvas pixels: yaw, pitch, roll, then scale and shift.

    The whole map is linear, so it is stored as a 2x3 matrix plus the centre.
    """

    def __init__(self, cx: float, cy: float, scale: float, yaw: float, pitch: float, roll: float):
        self.cx, self.cy, self.s = cx, cy, scale
        cyaw, syaw = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
        cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
        cr, sr = math.cos(math.radians(roll)), math.sin(math.radians(roll))
        # (x, y, z) -> yaw -> (x1, y, z1) -> pitch -> (x1, y1) -> roll and scale -> pixels
        x1 = np.array([cyaw, 0.0, syaw])
        z1 = np.array([-syaw, 0.0, cyaw])
        y1 = np.array([0.0, cp, 0.0]) - sp * z1
        self.M = scale * np.stack([cr * x1 - sr * y1, sr * x1 + cr * y1])  # 2 x 3
        self.MT = np.ascontiguousarray(self.M[:, :2].T)
        self.c = np.array([cx, cy])

    def __call__(self, pts: np.ndarray, z: float | np.ndarray = 0.0) -> np.ndarray:
        p = np.asarray(pts, float).reshape(-1, 2)
        out = p @ self.MT + self.c
        if np.ndim(z) == 0:
            if z:
                out += z * self.M[:, 2]
        else:
            out += np.asarray(z, float)[:, None] * self.M[:, 2]
        return out


_UNIT: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def ellipse_pts(
    cx: float, cy: float, rx: float, ry: float, n: int = 28, a0: float = 0.0, a1: float = 2 * math.pi
) -> np.ndarray:
    """Polygon points of an ellipse (or of the arc from angle a0 to a1)."""
    if a0 == 0.0 and a1 == 2 * math.pi:
        if n not in _UNIT:
            t = np.linspace(0, 2 * math.pi, n, endpoint=False)
            _UNIT[n] = (np.cos(t), np.sin(t))
        c, s = _UNIT[n]
    else:
        t = np.linspace(a0, a1, n)
        c, s = np.cos(t), np.sin(t)
    out = np.empty((n, 2))
    out[:, 0] = cx + rx * c
    out[:, 1] = cy + ry * s
    return out


def head_outline(ident: Identity, child: float, n: int = 64) -> np.ndarray:
    """Closed outline of the head: an ellipse on top, a superellipse jaw with a tapered chin below."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    hw = ident.head_w * (1 + 0.1 * child)
    jaw = ident.jaw * (1 - child)
    x = hw * c
    y = s.copy()
    low = s > 0
    expo = 2.0 / (2.0 + 1.4 * jaw)  # <1: squarer jaw
    x[low] = hw * np.sign(c[low]) * np.abs(c[low]) ** expo
    y[low] = np.abs(s[low]) ** (1.0 / (1 + 0.3 * jaw))
    taper = 1 - (ident.chin * (1 - 0.6 * child)) * np.clip(y, 0, 1) ** 3
    x = np.where(low, x * taper, x)
    return np.stack([x, y], axis=1)


def _pts(a: np.ndarray) -> list[tuple[float, float]]:
    return [tuple(p) for p in a.tolist()]


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(min(255.0, max(0.0, x * (1 - t) + y * t))) for x, y in zip(a, b))


def _scale(c, f: float) -> tuple[int, int, int]:
    return tuple(int(min(255.0, max(0.0, x * f))) for x in c)


# ------------------------------------------------------------------------------------------ drawing
@dataclass
class FaceInfo:
    """Where a drawn face landed, in output pixels."""

    box: tuple[float, float, float, float]  # x, y, w, h (forehead to chin, cheek to cheek)
    landmarks: np.ndarray  # (68, 2) iBUG-style points


class _FaceDrawer:
    """Draws one person onto a supersampled canvas; coordinates via ``Pose``."""

    def __init__(self, ident: Identity, look: Look, pose: Pose, rng: np.random.Generator):
        self.id, self.look, self.P, self.rng = ident, look, pose, rng
        age = look.age
        self.child = float(np.clip((16 - age) / 14, 0, 1))
        self.old = float(np.clip((age - 30) / 50, 0, 1))
        self.grey = float(np.clip((age - ident.grey_onset) / 30, 0, 1))
        au = {k: look.aus.get(k, 0.0) for k in AU_NAMES}
        self.au = au
        ch = self.child
        # vertical layout (children: features lower in a bigger cranium)
        self.eye_y = -0.02 + 0.12 * ch
        self.brow_y = self.eye_y - 0.17 + 0.02 * ch
        self.nose_y = self.eye_y + ident.nose_len * (1 - 0.3 * ch)
        self.mouth_y = self.nose_y + 0.19 * (1 - 0.15 * ch) - 0.01 * au["AU17"]
        self.eye_w = ident.eye_w * (1 + 0.25 * ch)
        self.eye_dx = ident.eye_dx * (1 - 0.05 * ch)
        self.skin = np.array(ident.skin) * (1 + 0.04 * ch)
        self.outline = head_outline(ident, ch)

    # helpers ---------------------------------------------------------------------------------
    def T(self, pts, z=0.0):
        return self.P(pts, z)

    def poly(self, draw: ImageDraw.ImageDraw, pts, fill, z=0.0, offset=(0, 0)):
        q = self.T(pts, z) - np.asarray(offset, float)
        draw.polygon(_pts(q), fill=fill)

    def line(self, draw: ImageDraw.ImageDraw, pts, fill, width: float, z=0.0, offset=(0, 0)):
        q = self.T(pts, z) - np.asarray(offset, float)
        w = max(1, int(round(width * self.P.s)))
        draw.line(_pts(q), fill=fill, width=w, joint="curve" if w >= 8 else None)

    # parts -----------------------------------------------------------------------------------
    def hair_colour(self) -> tuple[int, int, int]:
        return _mix(self.id.hair_colour, (200, 200, 198), self.grey * 0.9)

    def draw_body(self, d: ImageDraw.ImageDraw, bottom: float):
        hw = self.id.head_w
        skin = _scale(self.skin, 0.93)
        neck = np.array([[-0.42 * hw, 0.55], [0.42 * hw, 0.55], [0.45 * hw, 1.45], [-0.45 * hw, 1.45]])
        cloth = self.id.clothes
        sh = 1.35 + 0.1 * self.child
        body = np.array(
            [
                [-0.5 * hw, sh],
                [0.5 * hw, sh],
                [1.9, sh + 0.35],
                [2.4, bottom],
                [-2.4, bottom],
                [-1.9, sh + 0.35],
            ]
        )
        self.poly(d, body, cloth, z=-0.3)
        self.poly(d, neck, skin, z=-0.3)
        collar = np.array([[-0.48 * hw, sh - 0.02], [0.0, sh + 0.28], [0.48 * hw, sh - 0.02]])
        self.line(d, collar, _scale(cloth, 0.6), 0.05, z=-0.3)

    def draw_hair_back(self, d: ImageDraw.ImageDraw):
        st, hw = self.id.hair_style, self.id.head_w
        col = _scale(self.hair_colour(), 0.85)
        if st == "long":
            pts = np.concatenate(
                [
                    ellipse_pts(0, -0.05, hw * 1.18, 1.1, 30, math.pi, 2 * math.pi),
                    [[hw * 1.25, 1.5], [-hw * 1.25, 1.5]],
                ]
            )
            self.poly(d, pts, col, z=-0.4)
        elif st == "curly":
            self.poly(d, ellipse_pts(0, -0.25, hw * 1.45, 1.0, 40), col, z=-0.4)
        elif st == "bob":
            pts = np.concatenate(
                [
                    ellipse_pts(0, -0.1, hw * 1.2, 1.05, 30, math.pi, 2 * math.pi),
                    [[hw * 1.2, 0.55], [-hw * 1.2, 0.55]],
                ]
            )
            self.poly(d, pts, col, z=-0.4)
        elif st == "bun":
            self.poly(d, ellipse_pts(0, -1.12, 0.32, 0.26, 24), col, z=-0.4)

    def draw_ears(self, d: ImageDraw.ImageDraw):
        hw, e = self.id.head_w, self.id.ear
        if self.id.hair_style in ("long", "bob", "curly") and self.look.age >= 2:
            return  # covered by hair
        skin = _scale(self.skin, 0.9)
        for side in (-1, 1):
            pts = ellipse_pts(side * hw * 0.98, self.eye_y + 0.1, 0.09 * e, 0.17 * e, 20)
            self.poly(d, pts, skin, z=-0.2)
            inner = ellipse_pts(side * hw * 1.0, self.eye_y + 0.1, 0.045 * e, 0.11 * e, 16)
            self.poly(d, inner, _scale(self.skin, 0.72), z=-0.2)

    def draw_face(self, d: ImageDraw.ImageDraw):
        self.poly(d, self.outline, tuple(int(c) for c in np.clip(self.skin, 0, 255)), z=0.0)

    def eye_geometry(self, side: int):
        """Corner/upper/lower points of one eye (side -1 image left, +1 image right)."""
        au = self.au
        cx = side * self.eye_dx
        cy = self.eye_y - 0.005 * au["AU5"]
        w = self.eye_w
        opening = (
            1
            + 0.55 * au["AU5"]
            - 0.5 * au["AU7"]
            - 0.4 * au["AU6"]
            - 0.45 * au["AU43"]
            - 0.2 * au["AU9"]
            - 0.9 * self.look.blink
        )
        opening = max(opening, 0.05) * self.id.eye_h
        up = w * 0.62 * opening
        lo = w * (0.38 - 0.18 * au["AU6"] - 0.12 * au["AU7"]) * max(opening, 0.4)
        return cx, cy, w, up, lo

    def eye_curves(self, side: int, n: int = 12):
        cx, cy, w, up, lo = self.eye_geometry(side)
        t = np.linspace(-1, 1, n)
        skew = 0.15 * side  # the upper lid peaks slightly towards the inner corner (asym)
        top = np.stack([cx + w * t, cy - up * (1 - t**2) * (1 - skew * t)], 1)
        bot = np.stack([cx + w * t, cy + lo * (1 - t**2)], 1)
        return top, bot

    def draw_eyes(self, d: ImageDraw.ImageDraw):
        lid_col = _scale(self.skin, 0.86)
        lash = (30, 22, 20)
        for side in (-1, 1):
            cx, cy, w, up, lo = self.eye_geometry(side)
            top, bot = self.eye_curves(side)
            almond = np.concatenate([top, bot[::-1]])
            self.poly(d, almond, (232, 228, 222), z=0.3)
            ir = w * 0.5
            gx = cx + self.look.gaze * w * 0.5
            self.poly(d, ellipse_pts(gx, cy, ir, ir, 20), self.id.iris, z=0.3)
            self.poly(d, ellipse_pts(gx, cy, ir * 0.5, ir * 0.5, 14), (12, 10, 10), z=0.3)
            self.poly(
                d, ellipse_pts(gx + ir * 0.3, cy - ir * 0.35, ir * 0.18, ir * 0.18, 8), (245, 245, 245), z=0.3
            )
            # lids cover the iris outside the almond
            above = np.concatenate([top, (top + np.array([0, -w * 1.3]))[::-1]])
            below = np.concatenate([bot, (bot + np.array([0, w * 0.9]))[::-1]])
            self.poly(d, above, lid_col, z=0.3)
            self.poly(d, below, tuple(int(c) for c in np.clip(self.skin, 0, 255)), z=0.3)
            # lid crease and lashes
            crease = top + np.array([0, -w * 0.35])
            self.line(d, crease[2:-2], _scale(self.skin, 0.7), 0.012, z=0.3)
            self.line(d, top, lash, 0.028 if self.id.gender == 1 else 0.02, z=0.3)
            self.line(d, bot[2:-1], _scale(self.skin, 0.6), 0.01, z=0.3)

    def draw_brows(self, d: ImageDraw.ImageDraw):
        au = self.au
        col = _mix(self.hair_colour(), (30, 24, 20), 0.35)
        th = self.id.brow_thick * (1 - 0.3 * self.child)
        for side in (-1, 1):
            inner_x = side * (self.eye_dx - self.eye_w * 0.85 - 0.05 * au["AU4"])
            outer_x = side * (self.eye_dx + self.eye_w * 1.25)
            by = self.brow_y
            outer_raise = au["AU2"] + (au["AU2R"] if side == 1 else 0.0)
            iy = by - 0.08 * au["AU1"] + 0.1 * au["AU4"]
            oy = by - 0.06 * outer_raise + 0.015 * au["AU4"] + 0.02 * au["AU1"] * (1 - au["AU2"])
            t = np.linspace(0, 1, 9)
            xs = inner_x + (outer_x - inner_x) * t
            arch = (self.id.brow_arch + 0.03 * au["AU2"]) * np.sin(np.pi * np.clip(t * 1.15, 0, 1))
            ys = iy + (oy - iy) * t - arch
            thick = th * (1.1 - 0.5 * t)
            top = np.stack([xs, ys - thick / 2], 1)
            bot = np.stack([xs, ys + thick / 2], 1)
            self.poly(d, np.concatenate([top, bot[::-1]]), col, z=0.35)

    def draw_nose(self, d: ImageDraw.ImageDraw):
        au = self.au
        ny = self.nose_y - 0.02 * au["AU9"] - 0.01 * au["AU10"]
        nw = self.id.nose_w * (1 - 0.25 * self.child) * (1 + 0.12 * au["AU9"])
        dark = _scale(self.skin, 0.55)
        # alae (nose wings) and nostrils
        for side in (-1, 1):
            wing = ellipse_pts(
                side * nw * 0.85, ny - 0.01, nw * 0.42, 0.045, 12, -0.5 * math.pi, 1.3 * math.pi
            )
            self.line(d, wing[3:10] if side < 0 else wing[:8], _scale(self.skin, 0.72), 0.012, z=0.5)
            self.poly(d, ellipse_pts(side * nw * 0.45, ny + 0.018, nw * 0.26, 0.022, 12), dark, z=0.55)
        tip = ellipse_pts(0, ny - 0.03, nw * 0.55, 0.05, 16)
        self.poly(d, tip, _scale(self.skin, 1.04), z=0.6)
        if au["AU9"] > 0.15:
            for k in range(3):
                y = self.eye_y + 0.02 + 0.04 * k
                self.line(
                    d,
                    np.array([[-0.06, y], [0.0, y - 0.012], [0.06, y]]),
                    _scale(self.skin, 0.66),
                    0.01 * au["AU9"] + 0.004,
                    z=0.5,
                )

    def mouth_shape(self):
        """Curves of the lips: (upper outer, upper inner, lower inner, lower outer), x samples shared."""
        au, idn = self.au, self.id
        my = self.mouth_y
        mw = idn.mouth_w * (1 - 0.2 * self.child)
        mw *= (
            1
            + 0.25 * au["AU12"]
            + 0.3 * au["AU20"]
            - 0.25 * au["AU23"]
            - 0.22 * au["AU26"]
            + 0.08 * au["AU14"]
        )
        lift = 0.1 * au["AU12"] - 0.09 * au["AU15"] - 0.02 * au["AU20"] + idn.rest_mouth
        lift_r = lift + 0.085 * au["AU14"]  # one-sided smile (contempt) on the image-right corner
        opening = 0.06 * au["AU25"] + 0.2 * au["AU26"] + 0.02 * au["AU20"] * au["AU25"] + 0.025 * au["AU10"]
        opening *= 1 - 0.8 * au["AU23"]
        ul = idn.lip_up * (1 - 0.65 * au["AU23"]) * (1 - 0.2 * au["AU12"])
        ll = idn.lip_lo * (1 - 0.6 * au["AU23"]) * (1 + 0.3 * au["AU17"] * (1 - au["AU23"]))
        raise_up = 0.045 * au["AU10"]
        n = 17
        t = np.linspace(-1, 1, n)
        xs = t * mw
        lifts = np.where(t < 0, lift, lift_r) * np.abs(t) ** 1.6
        base = my - lifts
        shape = np.clip(1 - t**2, 0, 1)
        ex = 0.45 if au["AU20"] > 0.3 or au["AU10"] > 0.3 else 0.8
        half = opening / 2
        inner_top = base - half * shape**ex - raise_up * shape**0.5
        inner_bot = base + half * shape**ex
        bow = 1 - 0.35 * np.exp(-((t / 0.12) ** 2))  # Cupid's bow dip
        outer_top = inner_top - ul * shape**0.55 * bow
        outer_bot = inner_bot + ll * shape**0.6
        return xs, outer_top, inner_top, inner_bot, outer_bot

    def draw_mouth(self, d: ImageDraw.ImageDraw):
        xs, ot, it, ib, ob = self.mouth_shape()
        au = self.au
        z = 0.4
        lip = self.id.lip_colour
        lip_hi = _scale(lip, 1.08)
        upper = np.concatenate([np.stack([xs, ot], 1), np.stack([xs, it], 1)[::-1]])
        lower = np.concatenate([np.stack([xs, ib], 1), np.stack([xs, ob], 1)[::-1]])
        self.poly(d, lower, lip_hi, z=z)
        self.poly(d, upper, _scale(lip, 0.92), z=z)
        if np.max(ib - it) > 0.006:
            inside = np.concatenate([np.stack([xs, it], 1), np.stack([xs, ib], 1)[::-1]])
            self.poly(d, inside, (50, 20, 22), z=z)
            gap = ib - it
            teeth_h = np.minimum(gap * 0.55, 0.05)
            show = au["AU12"] + au["AU10"] + au["AU20"] > 0.3
            if show:
                inset = xs * 0.9
                teeth = np.concatenate(
                    [
                        np.stack([inset, it + 0.003], 1),
                        np.stack([inset, np.minimum(it + teeth_h, ib)], 1)[::-1],
                    ]
                )
                self.poly(d, teeth, (236, 232, 220), z=z)
                if au["AU20"] > 0.3 or au["AU10"] > 0.3:
                    low_teeth = np.concatenate(
                        [np.stack([inset, ib - teeth_h * 0.7], 1), np.stack([inset, ib - 0.002], 1)[::-1]]
                    )
                    self.poly(d, low_teeth, (222, 218, 206), z=z)
        else:
            self.line(d, np.stack([xs, (it + ib) / 2], 1), _scale(lip, 0.55), 0.012, z=z)
        if au["AU14"] > 0.2:  # dimple beside the raised corner
            x1, y1 = xs[-1] + 0.02, ((it + ib) / 2)[-1]
            self.line(
                d,
                np.array([[x1, y1 - 0.03], [x1 + 0.012, y1], [x1, y1 + 0.03]]),
                _scale(self.skin, 0.7),
                0.012 * au["AU14"] + 0.004,
                z=z,
            )

    def draw_wrinkles(self, d: ImageDraw.ImageDraw):
        au, old = self.au, self.old
        col = _scale(self.skin, 0.78 - 0.08 * old)
        w = 0.008 + 0.006 * old
        # nasolabial folds: deepen with age and with smiles / disgust
        fold = max(old * 0.9, au["AU12"], au["AU9"], au["AU10"]) if self.child < 0.5 else 0.0
        if fold > 0.15:
            xs, ot, it, ib, ob = self.mouth_shape()
            for side in (-1, 1):
                nx = side * self.id.nose_w * 1.2
                mx = side * (abs(xs[0]) + 0.05)
                my = ((it + ib) / 2)[0 if side < 0 else -1] + 0.04
                pts = np.array(
                    [[nx, self.nose_y - 0.02], [side * (abs(mx) + 0.015), (self.nose_y + my) / 2], [mx, my]]
                )
                self.line(d, pts, _scale(self.skin, 0.8 - 0.1 * fold), w * (0.6 + fold), z=0.35)
        # forehead lines (with age and with raised brows)
        lines = old + 0.7 * max(au["AU1"], au["AU2"])
        if lines > 0.35:
            for k in range(1 + int(lines * 3)):
                y = self.brow_y - 0.1 - 0.055 * k
                if y < self.id.hairline + 0.05:
                    break
                self.line(
                    d, ellipse_pts(0, y + 0.12, 0.32, 0.12, 9, 1.25 * math.pi, 1.75 * math.pi), col, w, z=0.3
                )
        # vertical frown lines (brow lowering, anger)
        if au["AU4"] > 0.3:
            for side in (-1, 1):
                x = side * 0.045
                self.line(
                    d,
                    np.array([[x, self.brow_y - 0.02], [x * 0.8, self.brow_y + 0.08]]),
                    col,
                    0.006 + 0.008 * au["AU4"],
                    z=0.4,
                )
        # crow's feet and under-eye bags
        if old > 0.45 or au["AU6"] > 0.5:
            for side in (-1, 1):
                ex = side * (self.eye_dx + self.eye_w * 1.25)
                for k in (-1, 0, 1):
                    self.line(
                        d,
                        np.array([[ex, self.eye_y + 0.02 * k], [ex + side * 0.06, self.eye_y + 0.04 * k]]),
                        col,
                        w * 0.8,
                        z=0.3,
                    )
        if old > 0.5:
            for side in (-1, 1):
                cx = side * self.eye_dx
                self.line(
                    d,
                    ellipse_pts(
                        cx, self.eye_y + 0.05, self.eye_w * 0.9, 0.05, 9, 0.15 * math.pi, 0.85 * math.pi
                    ),
                    col,
                    w * 0.8,
                    z=0.3,
                )

    def draw_beard(self, d: ImageDraw.ImageDraw):
        b = self.id.beard if self.look.age >= 18 else 0
        if b == 0:
            return
        col = self.hair_colour()
        xs, ot, it, ib, ob = self.mouth_shape()
        if b in (2, 3):  # moustache
            top = np.stack([xs * 1.1, ot - 0.035], 1)
            bot = np.stack([xs * 1.1, ot + 0.004], 1)
            self.poly(d, np.concatenate([top, bot[::-1]]), col, z=0.42)
        if b in (1, 3):
            out = self.outline
            low = out[(out[:, 1] > self.mouth_y - 0.15)]
            low = low[np.argsort(np.arctan2(low[:, 1], low[:, 0]))]
            inner = np.stack(
                [
                    np.linspace(low[-1, 0], low[0, 0], 9) * 0.55,
                    self.mouth_y + 0.08 + 0.12 * np.sin(np.linspace(0, np.pi, 9)),
                ],
                1,
            )
            pts = np.concatenate([low, inner])
            fill = col if b == 3 else _mix(self.skin, col, 0.35)
            self.poly(d, pts, fill, z=0.2)
            if b == 3:
                self.poly(
                    d,
                    np.concatenate([np.stack([xs, ob + 0.008], 1), np.stack([xs * 0.6, ob + 0.09], 1)[::-1]]),
                    col,
                    z=0.4,
                )

    def draw_hair_front(self, d: ImageDraw.ImageDraw):
        st, hw = self.id.hair_style, self.id.head_w * (1 + 0.1 * self.child)
        if self.look.age < 2:
            return
        col = self.hair_colour()
        hl = self.id.hairline
        if st == "receding" and self.look.age > 25:
            hl = min(-0.78, hl - 0.25) - 0.15 * self.old
        if self.child > 0.5:
            hl = min(hl, -0.55)
        t = np.linspace(0, 1, 25)
        # the cap: outer contour follows a slightly inflated skull; inner contour is the hairline
        grow = {"curly": 1.16, "short": 1.04, "receding": 1.02}.get(st, 1.07)
        ang = math.pi + t * math.pi
        outer = np.stack([hw * grow * np.cos(ang), -0.02 + 1.04 * grow * np.sin(ang)], 1)
        temple_y = self.eye_y - 0.18 if st not in ("long", "bob") else self.eye_y + 0.1
        side_x = hw * 0.98
        xin = np.linspace(side_x, -side_x, 25)
        part = 0.15 * (1 if (self.id.seed % 2) else -1)
        prof = np.clip(1 - np.abs(xin / side_x) ** 2.2, 0, 1)
        yin = temple_y + (hl - temple_y) * prof**0.45
        if st in ("long", "bob", "medium") and self.id.seed % 3 == 0:  # fringe
            yin = np.minimum(yin, self.brow_y - 0.06 + 0.02 * np.abs(xin - part))
            yin = np.maximum(yin, hl)
        inner = np.stack([xin, yin], 1)
        pts = np.concatenate(
            [np.array([[-hw * grow, temple_y]]), outer, np.array([[hw * grow, temple_y]]), inner]
        )
        self.poly(d, pts, col, z=0.1)
        if st in ("long", "bob", "medium"):
            down = 0.9 if st == "long" else (0.45 if st == "bob" else 0.05)
            for side in (-1, 1):
                strand = np.array(
                    [
                        [side * hw * 0.92, temple_y - 0.1],
                        [side * hw * 1.12, temple_y - 0.1],
                        [side * hw * 1.18, temple_y + down],
                        [side * hw * 1.0, temple_y + down],
                        [side * hw * 0.9, temple_y + 0.15],
                    ]
                )
                self.poly(d, strand, col, z=0.0)
        # texture: a few slightly darker strands, combed away from the parting
        dark = _scale(col, 0.82)
        rs = np.random.default_rng(self.id.seed)
        for _ in range(5 if st != "curly" else 12):
            a = rs.uniform(math.pi * 1.15, math.pi * 1.85)
            r0 = rs.uniform(0.8, 0.95)
            p0 = np.array([hw * r0 * math.cos(a), -0.02 + r0 * math.sin(a)])
            p1 = p0 + np.array([0.1 * math.cos(a), 0.1 + 0.05 * abs(math.sin(a))])
            self.line(d, np.stack([p0, p1]), dark, 0.008, z=0.1)

    def shading(self, size: tuple[int, int], offset: np.ndarray) -> Image.Image:
        """Multiplicative shading layer (128 = unchanged) over the face region.

        The layer is smooth, so it is drawn and blurred at a reduced resolution, then upsampled.
        """
        f = max(1, int(self.P.s // 30))
        small = (max(1, -(-size[0] // f)), max(1, -(-size[1] // f)))
        sh = Image.new("L", small, 128)
        d = ImageDraw.Draw(sh)
        o = np.asarray(offset, float)

        def P(pts, z):
            return _pts((self.T(pts, z) - o) / f)

        def W(width):
            return max(1, int(width * self.P.s / f))

        d.line(
            P(np.concatenate([self.outline, self.outline[:1]]), 0.0), fill=72, width=W(0.32), joint="curve"
        )
        for side in (-1, 1):
            cx, cy, w, up, lo = self.eye_geometry(side)
            d.polygon(P(ellipse_pts(cx, cy - 0.03, w * 1.45, w * 1.05, 20), 0.3), fill=92)
            d.polygon(P(ellipse_pts(side * 0.48, self.nose_y - 0.05, 0.14, 0.1, 16), 0.3), fill=150)
            side_line = np.array(
                [
                    [side * 0.075, self.brow_y + 0.05],
                    [side * 0.085, self.nose_y - 0.06],
                    [side * self.id.nose_w * 1.15, self.nose_y + 0.01],
                ]
            )
            d.line(P(side_line, 0.45), fill=96, width=W(0.05))
        d.polygon(P(ellipse_pts(0, self.nose_y + 0.06, self.id.nose_w * 1.1, 0.04, 16), 0.5), fill=80)
        d.polygon(P(ellipse_pts(0, self.brow_y - 0.2, 0.25, 0.14, 16), 0.3), fill=152)
        d.line(P(np.array([[0, self.brow_y + 0.05], [0, self.nose_y - 0.06]]), 0.5), fill=160, width=W(0.04))
        xs, ot, it, ib, ob = self.mouth_shape()
        d.polygon(P(ellipse_pts(0, ob.max() + 0.04, 0.12, 0.035, 16), 0.4), fill=98)
        d.polygon(P(ellipse_pts(0, 0.92, 0.18, 0.06, 16), 0.2), fill=150)
        sh = sh.filter(ImageFilter.GaussianBlur(max(0.5, 0.06 * self.P.s / f)))
        return sh if f == 1 else sh.resize(size, Image.BILINEAR)

    def face_mask(self, size: tuple[int, int], offset: np.ndarray) -> Image.Image:
        m = Image.new("L", size, 0)
        ImageDraw.Draw(m).polygon(_pts(self.T(self.outline, 0.0) - offset), fill=255)
        return m

    def landmarks(self) -> np.ndarray:
        """68 iBUG-style landmarks in face units transformed to canvas pixels."""
        out = self.outline
        # jaw 0..16: from image-left at eye level, round the chin, to image-right
        ang = np.arctan2(out[:, 1], out[:, 0] / self.id.head_w)
        a0 = math.asin(np.clip(self.eye_y + 0.05, -0.99, 0.99))
        targets = np.linspace(math.pi - a0, a0, 17)
        order = np.argsort(ang)
        jaw = np.stack(
            [np.interp(targets, ang[order], out[order, 0]), np.interp(targets, ang[order], out[order, 1])], 1
        )
        jaw = self.T(jaw, 0.0)
        pts = [jaw]
        # brows 17..26
        au = self.au
        for side in (-1, 1):
            inner_x = side * (self.eye_dx - self.eye_w * 0.85 - 0.05 * au["AU4"])
            outer_x = side * (self.eye_dx + self.eye_w * 1.25)
            iy = self.brow_y - 0.08 * au["AU1"] + 0.1 * au["AU4"]
            oy = self.brow_y - 0.06 * (au["AU2"] + (au["AU2R"] if side == 1 else 0))
            t = np.linspace(0, 1, 5)
            xs = inner_x + (outer_x - inner_x) * t
            ys = iy + (oy - iy) * t - self.id.brow_arch * np.sin(np.pi * t)
            b = np.stack([xs, ys], 1)
            pts.append(self.T(b[::-1] if side < 0 else b, 0.35))
        # nose 27..35
        bridge = np.stack([np.zeros(4), np.linspace(self.eye_y, self.nose_y - 0.02, 4)], 1)
        nw = self.id.nose_w
        base = np.stack([np.linspace(-nw, nw, 5), self.nose_y + np.array([0.0, 0.02, 0.03, 0.02, 0.0])], 1)
        pts += [self.T(bridge, np.linspace(0.35, 0.6, 4)), self.T(base, 0.5)]
        # eyes 36..47
        for side in (-1, 1):
            top, bot = self.eye_curves(side, n=7)
            if side < 0:  # outer corner, two upper, inner corner, two lower
                e = np.stack([top[0], top[2], top[4], top[6], bot[4], bot[2]])
            else:  # inner corner, two upper, outer corner, two lower
                e = np.stack([top[0], top[2], top[4], top[6], bot[4], bot[2]])
            pts.append(self.T(e, 0.3))
        # mouth 48..67
        xs, ot, it, ib, ob = self.mouth_shape()
        idx_o = [0, 3, 6, 8, 10, 13, 16]
        outer = [(xs[i], ot[i]) for i in idx_o] + [(xs[i], ob[i]) for i in (13, 10, 8, 6, 3)]
        inner = [
            (xs[1], it[1]),
            (xs[5], it[5]),
            (xs[8], it[8]),
            (xs[11], it[11]),
            (xs[15], it[15]),
            (xs[11], ib[11]),
            (xs[8], ib[8]),
            (xs[5], ib[5]),
        ]
        pts += [self.T(np.array(outer), 0.4), self.T(np.array(inner), 0.4)]
        return np.concatenate(pts)

    def face_box(self) -> np.ndarray:
        """Canvas-pixel box [x0, y0, x1, y1] from the forehead (above the brows) to the chin."""
        out = self.outline
        top_y = self.brow_y - 0.26
        sel = out[out[:, 1] > top_y]
        top = np.array([[x, top_y] for x in np.linspace(-0.4, 0.4, 5)])
        q = np.concatenate([self.T(sel, 0.0), self.T(top, 0.2)])
        return np.array([q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()])


# ------------------------------------------------------------------------------------------ scenes
@dataclass
class Person:
    """A person to place in a scene: centre of the head and head half-height in output pixels."""

    identity: Identity
    look: Look
    cx: float
    cy: float
    scale: float


@dataclass
class Nuisance:
    """Image-level variation: lighting gradient, blur, noise, occluder."""

    light_dir: float = 0.0  # radians, direction of the brightness gradient
    light_strength: float = 0.0  # 0 none .. 0.5 strong
    brightness: float = 1.0
    blur: float = 0.0  # Gaussian blur radius in output pixels
    noise: float = 0.0  # std of additive noise (0..255 scale)
    occluder: str | None = None  # one of OCCLUDERS, over the first person's face
    jpeg_quality: int = 90

    @staticmethod
    def sample(
        rng: np.random.Generator, occlusion_p: float = 0.08, strength: float = 1.0, blur_scale: float = 1.0
    ) -> Nuisance:
        """Random nuisance; ``strength`` scales all of it, ``blur_scale`` the blur (small images)."""
        return Nuisance(
            light_dir=float(rng.uniform(0, 2 * math.pi)),
            light_strength=float(rng.uniform(0, 0.45) * strength),
            brightness=float(np.clip(rng.normal(1.0, 0.12 * strength), 0.6, 1.35)),
            blur=float(rng.choice([0.0, 0.0, 0.0, 0.5, 1.0]) * strength * blur_scale),
            noise=float(rng.uniform(0, 6) * strength),
            occluder=str(rng.choice(OCCLUDERS[:3])) if rng.random() < occlusion_p else None,
            jpeg_quality=int(rng.integers(75, 96)),
        )


def make_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A smooth random room-like background: colour blobs, a few rectangles, a fine texture."""
    gw, gh = int(rng.integers(2, 5)), int(rng.integers(2, 4))
    grey = rng.uniform(40, 215)
    base = grey + (rng.uniform(30, 225, 3) - grey) * rng.uniform(0.1, 0.6)  # muted colours
    grid = base + rng.normal(0, 25, (gh, gw, 1)) + rng.normal(0, 10, (gh, gw, 3))
    grid = np.clip(grid, 0, 255).astype(np.uint8)
    img = Image.fromarray(grid).resize((w, h), Image.BICUBIC)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.1, 0.6) * w, y0 + rng.uniform(0.1, 0.6) * h
        col = grey + (rng.uniform(20, 235, 3) - grey) * rng.uniform(0.2, 0.8)
        d.rectangle([x0, y0, x1, y1], fill=tuple(int(c) for c in np.clip(col, 0, 255)))
    arr = np.asarray(img, np.float32)
    tex = rng.normal(0, rng.uniform(1, 6), (h // 2 + 1, w // 2 + 1, 1)).astype(np.float32)
    arr = arr + np.repeat(np.repeat(tex, 2, 0), 2, 1)[:h, :w]
    return np.clip(arr, 0, 255).astype(np.uint8)


def _draw_person(canvas: Image.Image, person: Person, rng: np.random.Generator, ss: int) -> FaceInfo:
    """Draw one person on the canvas (supersampled ``ss`` times); box/landmarks in output pixels."""
    look = person.look
    pose = Pose(person.cx * ss, person.cy * ss, person.scale * ss, look.yaw, look.pitch, look.roll)
    fd = _FaceDrawer(person.identity, look, pose, rng)
    d = ImageDraw.Draw(canvas)
    bottom = (canvas.height - pose.cy) / pose.s + 0.5
    fd.draw_body(d, max(bottom, 2.0))
    fd.draw_hair_back(d)
    fd.draw_ears(d)
    fd.draw_face(d)
    fd.draw_eyes(d)
    fd.draw_brows(d)
    fd.draw_nose(d)
    fd.draw_wrinkles(d)
    fd.draw_mouth(d)
    fd.draw_beard(d)
    # shading over the head box (multiplicative, masked to the face skin)
    box = fd.face_box()
    pad = 0.25 * pose.s
    x0 = int(max(0, box[0] - pad))
    y0 = int(max(0, box[1] - 0.6 * pose.s))
    x1 = int(min(canvas.width, box[2] + pad))
    y1 = int(min(canvas.height, box[3] + pad))
    if x1 - x0 > 4 and y1 - y0 > 4:
        off = np.array([x0, y0], float)
        sh = np.asarray(fd.shading((x1 - x0, y1 - y0), off), np.float32) / 128.0
        mask = np.asarray(fd.face_mask((x1 - x0, y1 - y0), off), np.float32) / 255.0
        gain = 1.0 + (sh - 1.0) * mask
        region = np.asarray(canvas.crop((x0, y0, x1, y1)), np.float32)
        region = np.clip(region * gain[..., None], 0, 255).astype(np.uint8)
        canvas.paste(Image.fromarray(region), (x0, y0))
    d = ImageDraw.Draw(canvas)
    fd.draw_hair_front(d)
    lm = fd.landmarks() / ss
    b = box / ss
    return FaceInfo(box=(float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])), landmarks=lm)


OCCLUDERS = ("bar", "patch", "hand", "full")


def _apply_occluder(img: Image.Image, kind: str | None, info: FaceInfo | None, rng: np.random.Generator):
    """Cover part of the face: a bar over eyes or mouth, a patch, a hand-like blob, or all of it."""
    if kind is None or info is None:
        return
    x, y, w, h = info.box
    d = ImageDraw.Draw(img)
    col = tuple(int(c) for c in rng.integers(10, 245, 3))
    if kind == "bar":  # horizontal bar across the eyes or the mouth (sunglasses / scarf-like)
        yc = y + h * rng.choice([0.38, 0.82])
        d.rectangle([x - 0.1 * w, yc - 0.09 * h, x + 1.1 * w, yc + 0.09 * h], fill=col)
    elif kind == "patch":
        px, py = x + rng.uniform(0, 0.7) * w, y + rng.uniform(0, 0.7) * h
        d.rectangle([px, py, px + 0.35 * w, py + 0.3 * h], fill=col)
    elif kind == "hand":  # a blob rising from below (hand on the chin)
        cx = x + rng.uniform(0.2, 0.8) * w
        d.ellipse([cx - 0.22 * w, y + 0.78 * h, cx + 0.22 * w, y + 1.25 * h], fill=col)
    elif kind == "full":  # an object passing in front of the whole face
        d.rectangle([x - 0.25 * w, y - 0.3 * h, x + 1.25 * w, y + 1.2 * h], fill=col)
    else:
        raise ValueError(f"unknown occluder {kind!r}; expected one of {OCCLUDERS}")


_BG_CACHE: list = []  # [(background array, ss, upscaled PIL image)]: clips reuse one background


def _upscaled(background: np.ndarray, ss: int) -> Image.Image:
    for arr, s, im in _BG_CACHE:
        if arr is background and s == ss:
            return im
    im = Image.fromarray(background).resize(
        (background.shape[1] * ss, background.shape[0] * ss), Image.NEAREST
    )
    _BG_CACHE[:] = [(background, ss, im)]  # keeps a reference, so the identity check stays valid
    return im


_NOISE_TABLE = np.random.default_rng(20210331).standard_normal(1 << 20, dtype=np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal noise of ``shape``: a random window of a fixed table (cheap, deterministic)."""
    n = int(np.prod(shape))
    reps = -(-n // _NOISE_TABLE.size)
    table = _NOISE_TABLE if reps == 1 else np.tile(_NOISE_TABLE, reps + 1)
    start = int(rng.integers(0, table.size - n + 1))
    return table[start : start + n].reshape(shape)


def _finish(img: Image.Image, nz: Nuisance, rng: np.random.Generator) -> np.ndarray:
    """Lighting gradient, blur and noise on the output-size image."""
    if nz.blur > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(nz.blur))
    arr = np.asarray(img, np.float32)
    h, w = arr.shape[:2]
    if nz.light_strength > 0 or nz.brightness != 1.0:
        xs = (np.arange(w, dtype=np.float32) / w - 0.5) * math.cos(nz.light_dir)
        ys = (np.arange(h, dtype=np.float32) / h - 0.5) * math.sin(nz.light_dir)
        gain = nz.brightness * (1 + 2 * nz.light_strength * (ys[:, None] + xs[None, :]))
        arr = arr * gain[..., None]
    if nz.noise > 0:
        arr += _noise(rng, arr.shape) * np.float32(nz.noise)
    arr += 0.5
    return np.clip(arr, 0, 255, out=arr).astype(np.uint8)


def render_scene(
    people: list[Person],
    size: tuple[int, int],
    rng: np.random.Generator,
    background: np.ndarray | None = None,
    nuisance: Nuisance | None = None,
) -> tuple[np.ndarray, list[FaceInfo]]:
    """Draw people (in list order: far to near) on a background; RGB uint8 image + per-person info.

    ``size`` is (width, height); ``nuisance.occluder`` covers the first person's face.
    """
    w, h = size
    nz = nuisance or Nuisance()
    ss = SS_LARGE if people and min(p.scale for p in people) >= LARGE_FACE else SS
    if background is None:
        canvas = Image.fromarray(make_background(rng, w, h)).resize((w * ss, h * ss), Image.NEAREST)
    else:
        canvas = _upscaled(background, ss).copy()
    infos = [_draw_person(canvas, p, rng, ss) for p in people]
    img = canvas.resize((w, h), Image.BOX)
    _apply_occluder(img, nz.occluder, infos[0] if infos else None, rng)
    return _finish(img, nz, rng), infos


def render_chip(
    identity: Identity,
    look: Look,
    size: int,
    rng: np.random.Generator,
    nuisance: Nuisance | None = None,
    framing: str = "tight",
    background: np.ndarray | None = None,
) -> tuple[np.ndarray, FaceInfo]:
    """A square face image: ``framing`` "tight" (UTKFace-like aligned chip), "close" (FER2013-like,
    the face fills the frame) or "loose" (VGGFace2-like, head and shoulders with margin)."""
    if framing == "tight":  # eyes a little above the middle, chin near the bottom edge
        scale = size * rng.uniform(0.48, 0.53)
        cx, cy = size * rng.uniform(0.48, 0.52), size * rng.uniform(0.42, 0.45)
    elif framing == "close":
        scale = size * rng.uniform(0.6, 0.66)
        cx, cy = size * rng.uniform(0.48, 0.52), size * rng.uniform(0.36, 0.4)
    elif framing == "loose":
        scale = size * rng.uniform(0.28, 0.36)
        cx, cy = size * rng.uniform(0.42, 0.58), size * rng.uniform(0.42, 0.52)
    else:
        raise ValueError(f"unknown framing {framing!r}; expected tight, close or loose")
    img, infos = render_scene(
        [Person(identity, look, cx, cy, scale)], (size, size), rng, background=background, nuisance=nuisance
    )
    return img, infos[0]
