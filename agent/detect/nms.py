"""Non-maximum suppression and anchor-free grid helpers, in numpy.

Invariants:
- `nms()` returns indices into its input, highest score first; every kept
  box overlaps every other kept box by at most `iou_threshold`, and every
  dropped box overlaps some kept box with a higher or equal score by more
  than that (property-tested).
- `batched_nms()` only suppresses boxes of the same class, so a person box
  never hides a bed box.
- Degenerate boxes (zero area) are kept if they score; IoU with them is 0.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def iou_one_to_many(box: FloatArray, boxes: FloatArray) -> npt.NDArray[np.float64]:
    """IoU of one xyxy box with each of Nx4 xyxy boxes."""
    b = np.asarray(box, dtype=np.float64)
    bs = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(b[2], bs[:, 2]) - np.maximum(b[0], bs[:, 0]), 0.0, None)
    iy = np.clip(np.minimum(b[3], bs[:, 3]) - np.maximum(b[1], bs[:, 1]), 0.0, None)
    inter = ix * iy
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    areas = np.clip(bs[:, 2] - bs[:, 0], 0.0, None) * np.clip(bs[:, 3] - bs[:, 1], 0.0, None)
    union = area_b + areas - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def iou_matrix(boxes: FloatArray) -> npt.NDArray[np.float64]:
    """Pairwise IoU of Nx4 xyxy boxes (N x N), with the same rules as `iou_one_to_many`."""
    bs = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = bs[:, 0], bs[:, 1], bs[:, 2], bs[:, 3]
    ix = np.maximum(np.minimum(x1[:, None], x1[None, :]) - np.maximum(x0[:, None], x0[None, :]), 0.0)
    iy = np.maximum(np.minimum(y1[:, None], y1[None, :]) - np.maximum(y0[:, None], y0[None, :]), 0.0)
    inter = ix * iy
    areas = np.maximum(x1 - x0, 0.0) * np.maximum(y1 - y0, 0.0)
    union = areas[:, None] + areas[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


# Up to this many candidates, one pairwise IoU matrix (at most 4 MiB) beats a numpy call per kept box.
_MATRIX_NMS_MAX = 724


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float, max_out: int = 1000) -> IntArray:
    """Greedy NMS over Nx4 xyxy boxes. Returns kept indices, best first."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    if b.shape[0] != s.shape[0]:
        raise ValueError(f"nms: {b.shape[0]} boxes but {s.shape[0]} scores")
    # Stable sort so equal scores keep input order (deterministic output).
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    if order.size <= _MATRIX_NMS_MAX:
        over = iou_matrix(b[order]) > iou_threshold
        dropped = np.zeros(order.size, dtype=bool)
        for i in range(order.size):
            if dropped[i]:
                continue
            keep.append(int(order[i]))
            if len(keep) >= max_out:
                break
            # Marks earlier boxes too; they were already visited, so that changes nothing.
            dropped |= over[i]
        return np.asarray(keep, dtype=np.int64)
    while order.size and len(keep) < max_out:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[iou_one_to_many(b[i], b[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: FloatArray, scores: FloatArray, class_ids: npt.NDArray[np.integer],
                iou_threshold: float, max_out: int = 1000) -> IntArray:
    """NMS per class. Returns kept indices sorted by score, best first."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    c = np.asarray(class_ids).reshape(-1)
    kept: list[npt.NDArray[np.int64]] = []
    for cls in np.unique(c):
        idx = np.flatnonzero(c == cls)
        kept.append(idx[nms(b[idx], s[idx], iou_threshold, max_out)])
    if not kept:
        return np.zeros(0, dtype=np.int64)
    allk = np.concatenate(kept)
    return allk[np.argsort(-s[allk], kind="stable")][:max_out].astype(np.int64)


@functools.lru_cache(maxsize=32)
def grid(in_w_px: int, in_h_px: int, strides: tuple[int, ...]) -> tuple[FloatArray, FloatArray]:
    """Cell coordinates for anchor-free heads, level by level, row-major within a level.

    Returns (cells Nx2 of (col, row), stride N). The order matches the
    flattened outputs of YOLOX, YuNet and NanoDet heads: stride 8 first, then
    16, then 32; within a level row by row. Cached per input size (the same
    few sizes every frame); the arrays are read-only so no caller can change
    the cached copy.
    """
    cells: list[FloatArray] = []
    st: list[FloatArray] = []
    for s in strides:
        gw, gh = -(-in_w_px // s), -(-in_h_px // s)  # ceil: a partial last cell still has an output
        xs, ys = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        st.append(np.full(gw * gh, s, dtype=np.float32))
    out_cells, out_st = np.concatenate(cells, axis=0), np.concatenate(st, axis=0)
    out_cells.setflags(write=False)
    out_st.setflags(write=False)
    return out_cells, out_st


def xywh_to_xyxy(b: FloatArray) -> FloatArray:
    """Centre/size boxes to corner boxes."""
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    half = b[:, 2:4] / 2
    return np.concatenate([b[:, 0:2] - half, b[:, 0:2] + half], axis=1)
