"""Small synthetic datasets in the exact Aachen v1.1, InLoc, HPatches and ETH layouts.

Scenes are rooms: axis-aligned boxes whose six faces carry procedural textures (noise plus random
shapes and glyphs, so local features are distinctive). Seen from inside, a box is convex, so every
face point in front of a camera and inside its frustum is visible: projections of sampled surface
points give exact covisibility for the reference SfM model, and ray casting gives exact per-pixel
3D coordinates for InLoc's `XYZcut`.

Conventions (COLMAP): `cam_from_world` maps world to camera, x right, y down, z forward; the
top-left pixel's centre is at (0.5, 0.5) in COLMAP coordinates, so pixel (u, v) of an array
(0-indexed) is the ray through (u + 0.5, v + 0.5). World z is up.

Pure numpy/OpenCV except `write_sift_model`, which uses pycolmap to write the COLMAP model.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

TEXELS_PER_M = 120  # texture resolution; a pixel at 2-3 m and f~260 covers ~1 cm


# --------------------------------------------------------------------------- geometry


def quat_wxyz_from_R(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(R).as_quat()
    q = np.array([w, x, y, z])
    return q if q[0] >= 0 else -q


def look_R(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """cam_from_world rotation of a camera looking along (yaw, pitch) in a z-up world."""
    f = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    R = np.stack([r, d, f])  # rows: camera axes in world coordinates
    if roll:
        c, s = np.cos(roll), np.sin(roll)
        R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ R
    return R


@dataclass
class Camera:
    name: str
    width: int
    height: int
    f: float
    R: np.ndarray  # cam_from_world rotation
    center: np.ndarray  # camera centre in world coordinates
    condition: str = ""

    @property
    def t(self) -> np.ndarray:
        return -self.R @ self.center

    @property
    def cx(self) -> float:
        return self.width / 2

    @property
    def cy(self) -> float:
        return self.height / 2

    def project(self, X: np.ndarray):
        """World points (N, 3) -> COLMAP pixel coordinates (N, 2), depth (N,)."""
        Xc = X @ self.R.T + self.t
        z = Xc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = self.f * Xc[:, :2] / z[:, None] + [self.cx, self.cy]
        return uv, z


# --------------------------------------------------------------------------- textures


def _noise(rng, h, w, octaves=5):
    out = np.zeros((h, w), np.float32)
    for o in range(octaves):
        s = 2 ** (o + 2)
        small = rng.random((max(2, h // s), max(2, w // s))).astype(np.float32)
        out += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) / (o + 1)
    out -= out.min()
    return out / max(out.max(), 1e-6)


def make_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A distinctive, non-repeating colour texture (h, w, 3) uint8."""
    base = np.stack([_noise(rng, h, w) for _ in range(3)], -1)
    img = (60 + 120 * base).astype(np.uint8)
    n_shapes = int(h * w / 350)
    fonts = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX]
    for _ in range(n_shapes):
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        s = int(rng.integers(4, 22))
        kind = rng.integers(0, 5)
        if kind == 0:
            cv2.circle(img, (x, y), s, col, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (x, y), (x + s, y + int(rng.integers(4, 22))), col, -1)
        elif kind == 2:
            pts = rng.integers(-s, s, (3, 2)) + [x, y]
            cv2.fillPoly(img, [pts.astype(np.int32)], col, cv2.LINE_AA)
        elif kind == 3:
            cv2.line(
                img,
                (x, y),
                (x + int(rng.integers(-30, 30)), y + int(rng.integers(-30, 30))),
                col,
                int(rng.integers(1, 4)),
                cv2.LINE_AA,
            )
        else:
            txt = "".join(rng.choice(list(string.ascii_uppercase + string.digits), 2))
            cv2.putText(
                img,
                txt,
                (x, y),
                fonts[int(rng.integers(0, 3))],
                s / 14,
                col,
                int(rng.integers(1, 3)),
                cv2.LINE_AA,
            )
    return cv2.GaussianBlur(img, (3, 3), 0.6)


@dataclass
class Room:
    """Axis-aligned box [lo, hi] with one texture per face (axis, side)."""

    lo: np.ndarray
    hi: np.ndarray
    textures: dict = field(default_factory=dict)

    @classmethod
    def random(cls, rng, lo, hi):
        room = cls(np.asarray(lo, float), np.asarray(hi, float))
        size = room.hi - room.lo
        for axis in range(3):
            a, b = room._uv_axes(axis)
            h = int(np.ceil(size[b] * TEXELS_PER_M))
            w = int(np.ceil(size[a] * TEXELS_PER_M))
            for side in (0, 1):
                room.textures[axis, side] = make_texture(rng, h, w)
        return room

    @staticmethod
    def _uv_axes(axis):
        return [(1, 2), (0, 2), (0, 1)][axis]

    def cast(self, origins: np.ndarray, dirs: np.ndarray):
        """Rays from inside the box -> hit points (N, 3), face axis (N,), side (N,)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.where(dirs > 0, self.hi, self.lo)
            t = (bound - origins) / dirs
        t = np.where(np.isfinite(t) & (t > 0), t, np.inf)
        axis = np.argmin(t, 1)
        tmin = t[np.arange(len(t)), axis]
        side = (dirs[np.arange(len(t)), axis] > 0).astype(int)
        return origins + tmin[:, None] * dirs, axis, side

    def shade(self, X, axis, side):
        out = np.zeros((len(X), 3), np.float32)
        for (ax, sd), tex in self.textures.items():
            m = (axis == ax) & (side == sd)
            if not m.any():
                continue
            a, b = self._uv_axes(ax)
            u = (X[m, a] - self.lo[a]) * TEXELS_PER_M - 0.5
            v = (self.hi[b] - X[m, b]) * TEXELS_PER_M - 0.5
            # remap wants maps under 32767 rows: lay the samples out as (n / 1024, 1024).
            n = len(u)
            pad = -n % 1024
            maps = [np.pad(c.astype(np.float32), (0, pad)).reshape(-1, 1024) for c in (u, v)]
            res = cv2.remap(tex, *maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            out[m] = res.reshape(-1, 3)[:n]
        return out

    def sample_surface(self, rng, n):
        """Uniform random points on the faces (area-weighted)."""
        size = self.hi - self.lo
        areas = np.array([size[a] * size[b] for a, b in map(self._uv_axes, range(3))] * 2)
        face = rng.choice(6, n, p=areas / areas.sum())
        X = self.lo + rng.random((n, 3)) * size
        axis, side = face % 3, face // 3
        X[np.arange(n), axis] = np.where(side == 1, self.hi[axis], self.lo[axis])
        return X


def render(room: Room, cam: Camera, supersample: int = 2):
    """Ray-cast an RGB image (H, W, 3) uint8 and its per-pixel world XYZ (H, W, 3)."""
    s = supersample
    H, W = cam.height * s, cam.width * s
    u, v = np.meshgrid((np.arange(W) + 0.5) / s, (np.arange(H) + 0.5) / s)
    rays_c = np.stack([(u - cam.cx) / cam.f, (v - cam.cy) / cam.f, np.ones_like(u)], -1)
    dirs = rays_c.reshape(-1, 3) @ cam.R  # camera -> world rotation is R.T
    X, axis, side = room.cast(np.broadcast_to(cam.center, dirs.shape), dirs)
    rgb = room.shade(X, axis, side).reshape(H, W, 3)
    rgb = cv2.resize(rgb, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
    # Exact XYZ at pixel centres (one ray per pixel, not supersampled).
    u1, v1 = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    rays1 = np.stack([(u1 - cam.cx) / cam.f, (v1 - cam.cy) / cam.f, np.ones_like(u1)], -1)
    d1 = rays1.reshape(-1, 3) @ cam.R
    X1, _, _ = room.cast(np.broadcast_to(cam.center, d1.shape), d1)
    return np.clip(rgb, 0, 255).astype(np.uint8), X1.reshape(cam.height, cam.width, 3)


def night(rgb: np.ndarray, rng) -> np.ndarray:
    """Dark, noisy, warm-tinted version of a day image."""
    x = rgb.astype(np.float32) * np.array([0.45, 0.38, 0.3]) + 5
    x += rng.normal(0, 2.0, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def imwrite(path: Path, rgb: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(path), rgb[..., ::-1])
    assert ok, path


def random_camera(
    rng, room: Room, name, width, height, f, margin=1.2, pitch=0.15, roll=0.0, condition=""
):
    c = room.lo + margin + rng.random(3) * (room.hi - room.lo - 2 * margin)
    c[2] = room.lo[2] + 1.2 + rng.random() * 0.6
    R = look_R(rng.uniform(-np.pi, np.pi), rng.uniform(-pitch, pitch), rng.uniform(-roll, roll))
    return Camera(name, width, height, f, R, c, condition)


def near_camera(rng, ref: Camera, name, width, height, f, dpos=0.35, dang=0.12, condition=""):
    """A camera near `ref` (queries must overlap the database to localize)."""
    from scipy.spatial.transform import Rotation

    dR = Rotation.from_rotvec(rng.uniform(-dang, dang, 3)).as_matrix()
    return Camera(
        name, width, height, f, dR @ ref.R, ref.center + rng.uniform(-dpos, dpos, 3), condition
    )


def write_poses_txt(path: Path, cams, with_condition=True):
    """Ground truth in the results format (`name qw qx qy qz tx ty tz`) plus a condition column."""
    with open(path, "w") as fd:
        for c in cams:
            q, t = quat_wxyz_from_R(c.R), c.t
            cols = [Path(c.name).name, *(f"{x:.12g}" for x in q), *(f"{x:.12g}" for x in t)]
            if with_condition:
                cols.append(c.condition)
            fd.write(" ".join(cols) + "\n")


# --------------------------------------------------------------------------- Aachen v1.1


def write_sift_model(out_dir: Path, room: Room, db: list, rng, n_points=3000, noise_px=0.3):
    """A SIFT-like COLMAP reference model: known poses, tracks from projected surface points."""
    import pycolmap

    X = room.sample_surface(rng, n_points)
    rec = pycolmap.Reconstruction()
    cam0 = db[0]
    camera = pycolmap.Camera(
        model="SIMPLE_RADIAL",
        width=cam0.width,
        height=cam0.height,
        params=[cam0.f, cam0.cx, cam0.cy, 0.0],
        camera_id=1,
    )
    rec.add_camera_with_trivial_rig(camera)
    obs = {}  # point idx -> [(image_id, point2D_idx)]
    for image_id, c in enumerate(db, start=1):
        uv, z = c.project(X)
        vis = (
            (z > 0.1)
            & (uv[:, 0] > 1)
            & (uv[:, 1] > 1)
            & (uv[:, 0] < c.width - 1)
            & (uv[:, 1] < c.height - 1)
        )
        idx = np.flatnonzero(vis)
        pts = uv[idx] + rng.normal(0, noise_px, (len(idx), 2))
        image = pycolmap.Image(name=c.name, keypoints=pts, camera_id=1, image_id=image_id)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pycolmap.Rotation3d(c.R), c.t))
        for k, i in enumerate(idx):
            obs.setdefault(i, []).append((image_id, k))
    for i, elems in obs.items():
        if len(elems) < 2:
            continue
        track = pycolmap.Track([pycolmap.TrackElement(im, k) for im, k in elems])
        rec.add_point3D(X[i], track)
    out_dir.mkdir(parents=True, exist_ok=True)
    rec.write_binary(str(out_dir))
    return rec


def make_aachen(
    root: Path,
    seed=0,
    n_db=16,
    n_day=4,
    n_night=2,
    size=(320, 240),
    f=260.0,
    qsize=(320, 240),
    qf=240.0,
):
    """Aachen v1.1 layout under `root`; returns the query cameras (ground truth)."""
    rng = np.random.default_rng(seed)
    room = Room.random(rng, [0, 0, 0], [8, 6, 3.2])
    W, H = size
    db = []
    for i in range(n_db):
        # Database: cameras on a ring looking outwards, so that views overlap their neighbours.
        yaw = 2 * np.pi * i / n_db + rng.uniform(-0.1, 0.1)
        c = np.array(
            [4 + 1.2 * np.cos(yaw + 2), 3 + 0.8 * np.sin(yaw + 2), 1.5 + rng.uniform(-0.2, 0.2)]
        )
        db.append(Camera(f"db/{1000 + i}.jpg", W, H, f, look_R(yaw, rng.uniform(-0.1, 0.1)), c))
    queries = []
    devices = ["nexus5x", "milestone"]
    for i in range(n_day + n_night):
        cond = "day" if i < n_day else "night"
        dev = devices[i % 2] if cond == "day" else "nexus5x"
        ref = db[int(rng.integers(0, n_db))]
        name = f"query/{cond}/{dev}/IMG_2016{1227 + i}_1{i:05d}.jpg"
        queries.append(near_camera(rng, ref, name, *qsize, qf, condition=cond))

    images = root / "images_upright"
    for c in db:
        imwrite(images / c.name, render(room, c)[0])
    for c in queries:
        rgb = render(room, c)[0]
        imwrite(images / c.name, night(rgb, rng) if c.condition == "night" else rgb)
    # Sequences exist in the real layout; the pipeline must not trip over them.
    imwrite(
        images / "sequences/gopro3_undistorted/00001.png",
        render(room, random_camera(rng, room, "s", 160, 120, 130))[0],
    )

    write_sift_model(root / "3D-models/aachen_v_1_1", room, db, rng)
    qdir = root / "queries"
    qdir.mkdir(parents=True, exist_ok=True)
    for cond in ("day", "night"):
        with open(qdir / f"{cond}_time_queries_with_intrinsics.txt", "w") as fd:
            for c in queries:
                if c.condition == cond:
                    fd.write(f"{c.name} SIMPLE_RADIAL {c.width} {c.height} {c.f} {c.cx} {c.cy} 0\n")
    return queries


# --------------------------------------------------------------------------- InLoc

INLOC_FOCAL = 4032.0 * 28.0 / 36.0  # what hloc's localize_inloc assumes for every query


def _rt(yaw, t):
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = t
    return T


def write_alignment(path: Path, T: np.ndarray, floor: str, scan: str):
    """InLoc's transformation file; hloc reads the 4x4 'after GICP' matrix at lines 7-10."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mat = lambda M: "\n".join(" ".join(f"{x:.10f}" for x in row) for row in M)  # noqa: E731
    with open(path, "w") as fd:
        fd.write(f"{floor} scan {scan} alignment\n")
        fd.write("Initial transformation:\n")
        fd.write(mat(T) + "\n")
        fd.write("After general icp:\n")
        fd.write(mat(T) + "\n")


def make_inloc(
    root: Path,
    seed=1,
    scans_per_floor=2,
    yaws=6,
    size=(320, 240),
    f=180.0,
    n_queries_per_floor=2,
    qsize=(640, 480),
    qf=INLOC_FOCAL / 4032 * 640,
    query_focal_hloc=False,
):
    """InLoc layout under `root`; returns query cameras (ground truth, condition = floor).

    With `query_focal_hloc`, queries are rendered with hloc's fixed focal (3136 px) at `qsize`,
    i.e. exactly what `localize_inloc` assumes; otherwise with `qf`.
    """
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    queries = []
    W, H = size
    for fi, floor in enumerate(["DUC1", "DUC2"]):
        # Each floor is its own room, stacked vertically in world coordinates.
        room = Room.random(rng, [0, 0, 4.0 * fi], [7, 5, 4.0 * fi + 3])
        cutouts = []
        for si in range(scans_per_floor):
            scan = f"{24 + 10 * si + fi:03d}"
            centre = np.array([2.3 + 2.4 * si, 2.5 + rng.uniform(-0.3, 0.3), 4.0 * fi + 1.6])
            # The scan's local frame: world = T @ local (a rotation about z plus translation).
            T = _rt(rng.uniform(-np.pi, np.pi), centre + rng.uniform(-0.5, 0.5, 3))
            write_alignment(
                root / f"database/alignments/{floor}/transformations/DUC_trans_{scan}.txt",
                T,
                floor,
                scan,
            )
            for yi in range(yaws):
                yaw = 2 * np.pi * yi / yaws
                name = f"database/cutouts/{floor}/{scan}/DUC_cutout_{scan}_{int(np.rad2deg(yaw))}_0.jpg"
                cam = Camera(name, W, H, f, look_R(yaw, 0.0), centre)
                rgb, X = render(room, cam)
                imwrite(root / name, rgb)
                local = (X.reshape(-1, 3) - T[:3, 3]) @ T[:3, :3]
                local = local.reshape(X.shape).astype(np.float64)
                # Real cutouts have holes where the scanner saw nothing.
                local[: H // 10, : W // 6] = np.nan
                savemat(str(root / (name + ".mat")), {"XYZcut": local})
                cutouts.append(cam)
        for qi in range(n_queries_per_floor):
            ref = cutouts[int(rng.integers(0, len(cutouts)))]
            qW, qH = qsize
            focal = INLOC_FOCAL if query_focal_hloc else qf
            name = f"query/iphone7/IMG_{len(queries) + 1:04d}.JPG"
            queries.append(
                near_camera(rng, ref, name, qW, qH, focal, dpos=0.3, dang=0.1, condition=floor)
            )
            imwrite(root / name, render(room, queries[-1])[0])
    return queries


# --------------------------------------------------------------------------- HPatches / ETH


def make_hpatches(root: Path, seed=2, n_seq=(2, 2), size=(240, 180)):
    """`hpatches-sequences-release` layout: i_*/v_* folders with 1..6.ppm and H_1_k files."""
    rng = np.random.default_rng(seed)
    W, H = size
    seqs = []
    for kind, n in zip("iv", n_seq):
        for s in range(n):
            d = root / f"{kind}_synth{s}"
            d.mkdir(parents=True, exist_ok=True)
            tex = make_texture(rng, int(H * 1.6), int(W * 1.6))
            base = cv2.resize(tex, (W, H), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(d / "1.ppm"), base[..., ::-1])
            for k in range(2, 7):
                if kind == "i":
                    Hm = np.eye(3)
                    g = rng.uniform(0.4, 1.6)
                    img = np.clip(255 * (base / 255.0) ** g * rng.uniform(0.7, 1.2), 0, 255)
                    img = img.astype(np.uint8)
                else:
                    src = np.float32([[0, 0], [W, 0], [W, H], [0, H]])
                    dst = (src + rng.uniform(-0.12, 0.12, (4, 2)) * [W, H]).astype(np.float32)
                    Hm = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
                    img = cv2.warpPerspective(base, Hm, (W, H), borderMode=cv2.BORDER_REFLECT)
                cv2.imwrite(str(d / f"{k}.ppm"), img[..., ::-1])
                np.savetxt(d / f"H_1_{k}", Hm)
            seqs.append(d.name)
    return seqs


def make_eth(root: Path, seed=3, n=8, size=(320, 240), f=260.0):
    """ETH local-feature benchmark layout of one small scene: `<root>/images/*.jpg`."""
    rng = np.random.default_rng(seed)
    room = Room.random(rng, [0, 0, 0], [8, 6, 3.2])
    cams = []
    for i in range(n):
        yaw = 0.25 * i
        c = np.array([6.0 - 0.25 * i, 4.0, 1.5])
        cams.append(Camera(f"{i:04d}.jpg", *size, f, look_R(yaw + np.pi, 0.05), c))
        imwrite(root / "images" / cams[-1].name, render(room, cams[-1])[0])
    return cams
