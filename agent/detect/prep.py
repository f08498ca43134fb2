"""Pre-processing for detectors: resize/letterbox, colour order, normalisation, and the way back.

Invariants:
- `prepare()` never modifies its input and accepts any non-empty uint8 image
  of shape HxW, HxWx1, HxWx3 or HxWx4 (grey and BGRA are converted to BGR);
  anything else raises `AnalysisError` naming the shape.
- `Letterbox.to_rel()` is the exact inverse of the geometry `prepare()`
  applied: a point of the source image maps into the network input and back
  to the same relative source coordinate (property-tested). Results are
  clipped to 0..1, so padding never produces a box outside the frame.
- The spec comes from the manifest's `preprocess` column, so a model's
  pre-processing is written down in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from agent.core.datatypes import Image
from agent.errors import AnalysisError, ModelError

FloatArray = npt.NDArray[np.float32]
ResizeMode = Literal["letterbox_tl", "letterbox_center", "stretch"]


@dataclass(frozen=True, slots=True)
class PrepSpec:
    """How one model wants its input. Parsed from `resize=...;pad=...;order=...;mean=...;std=...`."""

    resize: ResizeMode = "letterbox_tl"
    pad_value: float = 0.0
    rgb: bool = False
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @staticmethod
    def parse(text: str, where: str = "preprocess") -> PrepSpec:
        fields: dict[str, str] = {}
        for part in text.split(";"):
            if not part.strip():
                continue
            k, sep, v = part.partition("=")
            if not sep:
                raise ModelError(f"{where}: {part!r} is not key=value")
            fields[k.strip()] = v.strip()
        unknown = set(fields) - {"resize", "pad", "order", "mean", "std"}
        if unknown:
            raise ModelError(f"{where}: unknown keys {sorted(unknown)}")
        resize = fields.get("resize", "letterbox_tl")
        if resize not in ("letterbox_tl", "letterbox_center", "stretch"):
            raise ModelError(f"{where}: resize {resize!r} must be letterbox_tl, letterbox_center or stretch")
        order = fields.get("order", "bgr")
        if order not in ("bgr", "rgb"):
            raise ModelError(f"{where}: order {order!r} must be bgr or rgb")

        def triple(key: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
            if key not in fields:
                return default
            try:
                vals = tuple(float(x) for x in fields[key].split(","))
            except ValueError:
                raise ModelError(f"{where}: {key} {fields[key]!r} must be three numbers") from None
            if len(vals) != 3:
                raise ModelError(f"{where}: {key} {fields[key]!r} must be three numbers")
            return (vals[0], vals[1], vals[2])

        std = triple("std", (1.0, 1.0, 1.0))
        if any(s == 0 for s in std):
            raise ModelError(f"{where}: std must not contain 0")
        try:
            pad = float(fields.get("pad", "0"))
        except ValueError:
            raise ModelError(f"{where}: pad {fields['pad']!r} is not a number") from None
        return PrepSpec(
            resize=resize,  # type: ignore[arg-type]  # checked above
            pad_value=pad,
            rgb=order == "rgb",
            mean=triple("mean", (0.0, 0.0, 0.0)),
            std=std,
        )


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Geometry from source pixels to network-input pixels: in = src * scale + pad."""

    src_w_px: int
    src_h_px: int
    in_w_px: int
    in_h_px: int
    scale_x: float
    scale_y: float
    pad_x_px: float
    pad_y_px: float

    def to_rel(self, x_in: npt.ArrayLike, y_in: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Network-input pixel coordinates -> relative source coordinates, clipped to 0..1."""
        x = (np.asarray(x_in, dtype=np.float64) - self.pad_x_px) / self.scale_x / self.src_w_px
        y = (np.asarray(y_in, dtype=np.float64) - self.pad_y_px) / self.scale_y / self.src_h_px
        return np.clip(x, 0.0, 1.0).astype(np.float32), np.clip(y, 0.0, 1.0).astype(np.float32)

    def boxes_to_rel(self, boxes_in: FloatArray) -> FloatArray:
        """Nx4 (x0, y0, x1, y1) in network-input pixels -> Nx4 relative source coordinates."""
        b = np.asarray(boxes_in, dtype=np.float32).reshape(-1, 4)
        x0, y0 = self.to_rel(b[:, 0], b[:, 1])
        x1, y1 = self.to_rel(b[:, 2], b[:, 3])
        return np.stack([x0, y0, x1, y1], axis=1)


def as_bgr(image: npt.NDArray[np.generic]) -> Image:
    """Check an input image and return it as HxWx3 uint8 BGR (a view when already so)."""
    if not isinstance(image, np.ndarray):
        raise AnalysisError(f"detector input must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise AnalysisError(f"detector input must be uint8, got {image.dtype}")
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise AnalysisError(f"detector input must be a non-empty HxW or HxWxC image, got shape {image.shape}")
    img: Image = np.asarray(image, dtype=np.uint8)  # no copy: the dtype is already uint8
    if img.ndim == 2:
        return np.asarray(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    c = img.shape[2]
    if c == 3:
        return img
    if c == 1:
        return np.asarray(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if c == 4:
        return np.asarray(cv2.cvtColor(img, cv2.COLOR_BGRA2BGR), dtype=np.uint8)
    raise AnalysisError(f"detector input must have 1, 3 or 4 channels, got shape {image.shape}")


def fit_aspect(src_w_px: int, src_h_px: int, long_side_px: int, multiple_px: int = 32) -> tuple[int, int]:
    """(width, height) of a network input whose long side is `long_side_px` and whose short side
    is the next multiple of `multiple_px` that holds the frame at that scale (aspect kept)."""
    long, short = max(src_w_px, src_h_px), min(src_w_px, src_h_px)
    fitted = max(multiple_px, -(-short * long_side_px // (long * multiple_px)) * multiple_px)
    fitted = min(fitted, -(-long_side_px // multiple_px) * multiple_px)
    return (long_side_px, fitted) if src_w_px >= src_h_px else (fitted, long_side_px)


def geometry(src_w_px: int, src_h_px: int, in_w_px: int, in_h_px: int, resize: ResizeMode) -> Letterbox:
    """The letterbox/stretch geometry, without touching pixels."""
    if resize == "stretch":
        return Letterbox(src_w_px, src_h_px, in_w_px, in_h_px, in_w_px / src_w_px, in_h_px / src_h_px, 0.0, 0.0)
    scale = min(in_w_px / src_w_px, in_h_px / src_h_px)
    new_w = max(1, min(in_w_px, round(src_w_px * scale)))
    new_h = max(1, min(in_h_px, round(src_h_px * scale)))
    if resize == "letterbox_center":
        pad_x, pad_y = (in_w_px - new_w) // 2, (in_h_px - new_h) // 2
    else:
        pad_x, pad_y = 0, 0
    # Use the realised scale per axis (after rounding) so the inverse is exact.
    return Letterbox(src_w_px, src_h_px, in_w_px, in_h_px, new_w / src_w_px, new_h / src_h_px,
                     float(pad_x), float(pad_y))


def _resized(image: Image, box: Letterbox, antialias: bool = True, half: Image | None = None) -> Image:
    new_w = round(box.src_w_px * box.scale_x)
    new_h = round(box.src_h_px * box.scale_y)
    if (new_w, new_h) == (box.src_w_px, box.src_h_px):
        return image
    shrink = new_w < box.src_w_px and new_h < box.src_h_px
    if not (antialias and shrink):
        # Object detectors (large objects) and enlargements: bilinear, under 1 ms for 1080p.
        return np.asarray(cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
    return area_shrink(image, new_w, new_h, half)


def area_shrink(image: Image, new_w: int, new_h: int, half: Image | None = None) -> Image:
    """Shrink with every source pixel counted, so small faces do not alias away, at a bounded cost.

    OpenCV's INTER_AREA is cheap for a ratio of exactly 2 (1280x720 -> 640x360 in 0.2 ms) and
    costly otherwise (768x576 -> 640x480: 2.8 ms; 1920x1080 -> 640x360: 2.6 ms). So the image is
    halved by exact 2x area averages while it is at least twice the target; the last step, a
    ratio under 2, is bilinear, whose 2x2 taps reach every source pixel. A frame with an odd side,
    or a target of another aspect, that is still twice the target along a side goes bilinear to
    twice the target, then one exact halving.

    `half`, when given, is `image` after the first of those halvings (`Frame.half`): it is used
    in its place, so the result is the same pixels, without reading the whole image again.
    """
    img = image
    if (half is not None and img.shape[1] >= 2 * new_w and img.shape[0] >= 2 * new_h
            and not (img.shape[1] % 2 or img.shape[0] % 2)
            and half.shape[:2] == (img.shape[0] // 2, img.shape[1] // 2)):
        img = half
    while img.shape[1] >= 2 * new_w and img.shape[0] >= 2 * new_h and not (img.shape[1] % 2 or img.shape[0] % 2):
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    if (w, h) == (new_w, new_h):
        return np.asarray(img, dtype=np.uint8)
    if w >= 2 * new_w or h >= 2 * new_h:
        img = cv2.resize(img, (2 * new_w, 2 * new_h), interpolation=cv2.INTER_LINEAR)
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    return np.asarray(cv2.resize(img, (new_w, new_h), interpolation=interp), dtype=np.uint8)


def resize_into(image: Image, box: Letterbox, pad_value: float, antialias: bool = True) -> Image:
    """Resize `image` into an in_h x in_w canvas per `box` (uint8, BGR). Used by tools and tests."""
    resized = _resized(image, box, antialias)
    new_h, new_w = resized.shape[:2]
    if new_w == box.in_w_px and new_h == box.in_h_px:
        return resized
    fill = int(round(min(255.0, max(0.0, pad_value))))
    canvas = np.full((box.in_h_px, box.in_w_px, 3), fill, dtype=np.uint8)
    x, y = int(box.pad_x_px), int(box.pad_y_px)
    canvas[y:y + new_h, x:x + new_w] = resized
    return canvas


def prepare(image: npt.NDArray[np.generic], spec: PrepSpec, in_w_px: int, in_h_px: int,
            antialias: bool = True, half: Image | None = None) -> tuple[FloatArray, Letterbox]:
    """Image -> (1x3xHxW float32 blob, geometry to map outputs back). `half`: see `area_shrink`.

    The resized pixels are written straight into the planar blob (no padded
    uint8 canvas, no transpose copy); padding gets `pad_value` before
    normalisation, as if the canvas had been padded.
    """
    bgr = as_bgr(image)
    h, w = bgr.shape[:2]
    box = geometry(w, h, in_w_px, in_h_px, spec.resize)
    resized = _resized(bgr, box, antialias, half if bgr is image else None)
    new_h, new_w = resized.shape[:2]
    x, y = int(box.pad_x_px), int(box.pad_y_px)
    blob = np.empty((1, 3, in_h_px, in_w_px), dtype=np.float32)
    if (new_w, new_h) != (in_w_px, in_h_px):
        # Only the padding strips: filling the whole blob first wrote every pixel twice.
        pad = round(min(255.0, max(0.0, spec.pad_value)))
        blob[0, :, :y, :] = pad
        blob[0, :, y + new_h:, :] = pad
        blob[0, :, y:y + new_h, :x] = pad
        blob[0, :, y:y + new_h, x + new_w:] = pad
    # One contiguous plane per channel: a third of the cost of a strided transpose copy.
    planes = cv2.split(resized)
    for c, plane in enumerate(planes[::-1] if spec.rgb else planes):
        blob[0, c, y:y + new_h, x:x + new_w] = plane
    if spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0):
        for c in range(3):
            blob[0, c] -= spec.mean[c]
            blob[0, c] /= spec.std[c]
    return blob, box
