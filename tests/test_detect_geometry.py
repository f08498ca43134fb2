"""Pre- and post-processing maths: letterbox, grid decode, NMS (Hypothesis for geometry)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from detect_support import photo
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.analysis.shrink import shrink_frame
from agent.core.datatypes import HALF_MIN_PX, Frame
from agent.detect import nms as nms_mod
from agent.detect.nms import batched_nms, grid, iou_matrix, iou_one_to_many, nms, xywh_to_xyxy
from agent.detect.prep import PrepSpec, area_shrink, as_bgr, fit_aspect, geometry, prepare
from agent.detect.ultraface import priors
from agent.detect.yolox import decode_yolox
from agent.detect.yunet import decode_yunet
from agent.errors import AnalysisError, ModelError

MODES = st.sampled_from(["letterbox_tl", "letterbox_center", "stretch"])


# --- letterbox ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    src_w=st.integers(1, 5000), src_h=st.integers(1, 5000),
    in_w=st.integers(8, 1024), in_h=st.integers(8, 1024),
    fx=st.floats(0, 1), fy=st.floats(0, 1), mode=MODES,
)
def test_letterbox_round_trip(src_w: int, src_h: int, in_w: int, in_h: int, fx: float, fy: float, mode: str) -> None:
    box = geometry(src_w, src_h, in_w, in_h, mode)  # type: ignore[arg-type]
    # The resized image fits inside the network input.
    assert box.src_w_px * box.scale_x + box.pad_x_px <= in_w + 1e-6
    assert box.src_h_px * box.scale_y + box.pad_y_px <= in_h + 1e-6
    if mode != "stretch":  # aspect ratio kept: each side is the common scale, rounded to whole pixels
        s = min(in_w / src_w, in_h / src_h)
        for side, sc in ((src_w, box.scale_x), (src_h, box.scale_y)):
            assert abs(side * sc - side * s) <= 0.5 + 1e-6 or round(side * sc) == 1
    # A source point goes into the input and back to the same relative coordinate.
    x_in = fx * src_w * box.scale_x + box.pad_x_px
    y_in = fy * src_h * box.scale_y + box.pad_y_px
    rx, ry = box.to_rel(x_in, y_in)
    assert abs(float(rx) - fx) < 1e-4 and abs(float(ry) - fy) < 1e-4


@settings(max_examples=100, deadline=None)
@given(x=st.floats(-5000, 5000), y=st.floats(-5000, 5000), mode=MODES)
def test_letterbox_results_are_clipped(x: float, y: float, mode: str) -> None:
    box = geometry(640, 480, 416, 416, mode)  # type: ignore[arg-type]
    rx, ry = box.to_rel(x, y)
    assert 0.0 <= float(rx) <= 1.0 and 0.0 <= float(ry) <= 1.0


def test_prepare_letterbox_pads_and_normalises() -> None:
    img = np.full((100, 200, 3), 200, np.uint8)
    img.setflags(write=False)  # frames are read-only; preparing must not need to write
    spec = PrepSpec.parse("resize=letterbox_tl;pad=114;order=bgr;mean=0,0,0;std=1,1,1")
    blob, box = prepare(img, spec, 64, 64)
    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32
    assert np.all(blob[0, :, :32, :] == 200) and np.all(blob[0, :, 32:, :] == 114)
    assert (box.scale_x, box.scale_y, box.pad_x_px, box.pad_y_px) == (0.32, 0.32, 0.0, 0.0)
    spec_c = PrepSpec.parse("resize=letterbox_center;pad=0;order=rgb;mean=100,100,100;std=50,50,50")
    img2 = np.zeros((100, 200, 3), np.uint8)
    img2[..., 2] = 250  # red in BGR
    blob2, box2 = prepare(img2, spec_c, 64, 64)
    assert box2.pad_y_px == 16.0
    assert blob2[0, 0, 32, 32] == pytest.approx(3.0)  # R first after the swap: (250-100)/50
    assert blob2[0, 0, 0, 0] == pytest.approx(-2.0)  # padding 0 normalised


@pytest.mark.parametrize(("src", "dst"), [((768, 576), (640, 480)), ((1280, 720), (640, 360)),
                                         ((1920, 1080), (640, 360)), ((1600, 900), (640, 360)),
                                         ((3840, 2160), (640, 360)), ((641, 479), (320, 239))])
def test_area_shrink_stays_close_to_inter_area(src: tuple[int, int], dst: tuple[int, int]) -> None:
    """The cheap shrink (exact 2x area, bilinear under 2x, bilinear to 2x then area above) is
    within a grey level or two of OpenCV's exact area average on a real photo."""
    img = cv2.resize(photo("coco_val2017_000000001000.jpg"), src)
    ours = area_shrink(img, *dst)
    exact = cv2.resize(img, dst, interpolation=cv2.INTER_AREA)
    assert ours.shape == exact.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(np.int16) - exact.astype(np.int16)).mean() < 2.0


@pytest.mark.parametrize("src", [(1280, 720), (1920, 1080), (768, 576), (3840, 2160), (641, 480), (640, 384),
                                 (1280, 722)])
def test_a_frames_half_gives_the_detector_the_same_input(src: tuple[int, int]) -> None:
    """`Frame.half` is the exact 2x2 area mean of the frame, and a detector fed it beside the frame
    prepares exactly the blob it prepares from the frame alone, for the face model's own fitted
    input, a fixed square input and an object model's bilinear path; a half that does not belong
    to the image (another size) is not used."""
    img = cv2.resize(photo("coco_val2017_000000001000.jpg"), src)
    frame = Frame("cam", 0, 0.0, 0.0, img)
    w, h = src
    if w % 2 or h % 2:
        assert frame.half is None
    else:
        assert frame.half is not None and not frame.half.flags.writeable
        assert np.array_equal(frame.half, cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    spec = PrepSpec.parse("resize=letterbox_tl;pad=0;order=bgr")
    for in_w, in_h in (fit_aspect(w, h, 640), (320, 320), (416, 256)):
        for antialias in (True, False):
            want, box = prepare(img, spec, in_w, in_h, antialias)
            got, box2 = prepare(img, spec, in_w, in_h, antialias, frame.half)
            assert box == box2 and np.array_equal(want, got), (in_w, in_h, antialias)
    wrong = np.zeros((h // 2 + 2, w // 2, 3), np.uint8)
    want, _ = prepare(img, spec, 320, 320)
    assert np.array_equal(prepare(img, spec, 320, 320, True, wrong)[0], want)


def test_small_and_odd_frames_have_no_half_and_still_shrink() -> None:
    assert Frame("cam", 0, 0.0, 0.0, np.zeros((HALF_MIN_PX - 2, 200, 3), np.uint8)).half is None
    odd = Frame("cam", 0, 0.0, 0.0, np.full((361, 640, 3), 7, np.uint8))
    assert odd.half is None
    assert shrink_frame(odd, (160, 90)).shape == (90, 160, 3)
    even = Frame("cam", 0, 0.0, 0.0, np.full((360, 640, 3), 7, np.uint8))
    assert even.half is not None and np.all(shrink_frame(even, (160, 90)) == 7)
    # A target larger than the half comes from the frame itself.
    assert shrink_frame(even, (400, 225)).shape == (225, 400, 3)


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("resize=crop", "resize 'crop'"),
        ("order=bgra", "order"),
        ("mean=1,2", "three numbers"),
        ("std=1,0,1", "must not contain 0"),
        ("colour=red", "unknown keys"),
        ("resize", "not key=value"),
    ],
)
def test_prep_spec_rejects_bad_text(text: str, msg: str) -> None:
    with pytest.raises(ModelError, match=msg):
        PrepSpec.parse(text)


def test_as_bgr_accepts_grey_and_bgra_rejects_the_rest() -> None:
    assert as_bgr(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    assert as_bgr(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5, 3)
    assert as_bgr(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    for bad, msg in [
        (np.zeros((0, 5, 3), np.uint8), "non-empty"),
        (np.zeros((4, 5, 3), np.float32), "uint8"),
        (np.zeros((4, 5, 2), np.uint8), "1, 3 or 4 channels"),
        (np.zeros((4,), np.uint8), "non-empty HxW"),
    ]:
        with pytest.raises(AnalysisError, match=msg):
            as_bgr(bad)


# --- NMS -----------------------------------------------------------------------

BOXES = st.lists(
    st.tuples(st.floats(0, 100), st.floats(0, 100), st.floats(0, 60), st.floats(0, 60), st.floats(0, 1)),
    min_size=0, max_size=40,
)


def _arrays(rows: list[tuple[float, float, float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    a = np.array(rows, dtype=np.float32)
    boxes = np.stack([a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]], axis=1)
    return boxes, a[:, 4]


@settings(max_examples=200, deadline=None)
@given(rows=BOXES, thr=st.floats(0.05, 0.95))
def test_nms_properties(rows: list[tuple[float, float, float, float, float]], thr: float) -> None:
    boxes, scores = _arrays(rows)
    keep = nms(boxes, scores, thr)
    assert len(set(keep.tolist())) == len(keep)
    assert np.all(np.diff(scores[keep]) <= 0)  # best first
    for i, k in enumerate(keep):  # kept boxes do not overlap each other too much
        if i + 1 < len(keep):
            assert np.all(iou_one_to_many(boxes[k], boxes[keep[i + 1:]]) <= thr + 1e-6)
    for d in set(range(len(rows))) - set(keep.tolist()):  # each dropped box has a better kept cover
        ious = iou_one_to_many(boxes[d], boxes[keep])
        assert np.any((ious > thr - 1e-6) & (scores[keep] >= scores[d]))


@settings(max_examples=100, deadline=None)
@given(rows=BOXES, thr=st.floats(0.05, 0.95))
def test_batched_nms_never_suppresses_across_classes(rows: list[tuple[float, float, float, float, float]], thr: float) -> None:
    boxes, scores = _arrays(rows)
    # Every box duplicated as class 1: each class must keep exactly what plain NMS keeps.
    b2 = np.concatenate([boxes, boxes])
    s2 = np.concatenate([scores, scores])
    c2 = np.concatenate([np.zeros(len(rows), np.int64), np.ones(len(rows), np.int64)])
    keep = batched_nms(b2, s2, c2, thr)
    assert len(keep) == 2 * len(nms(boxes, scores, thr))
    assert np.all(np.diff(s2[keep]) <= 0)


@settings(max_examples=200, deadline=None)
@given(rows=BOXES, thr=st.floats(0.05, 0.95), max_out=st.integers(1, 50))
def test_matrix_nms_equals_the_one_row_at_a_time_nms(rows: list[tuple[float, float, float, float, float]],
                                                    thr: float, max_out: int) -> None:
    boxes, scores = _arrays(rows)
    fast = nms(boxes, scores, thr, max_out)
    saved = nms_mod._MATRIX_NMS_MAX
    nms_mod._MATRIX_NMS_MAX = -1  # force the row-at-a-time path
    try:
        slow = nms(boxes, scores, thr, max_out)
    finally:
        nms_mod._MATRIX_NMS_MAX = saved
    assert fast.tolist() == slow.tolist()
    if len(rows):
        assert np.allclose(iou_matrix(boxes)[0], iou_one_to_many(boxes[0], boxes))


def test_iou_of_degenerate_boxes_is_zero() -> None:
    assert iou_one_to_many(np.array([1, 1, 1, 1], np.float32), np.array([[0, 0, 2, 2]], np.float32))[0] == 0.0
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        nms(np.zeros((2, 4), np.float32), np.zeros(1, np.float32), 0.5)


# --- grid decodes -----------------------------------------------------------------


def test_grid_order_matches_flattened_heads() -> None:
    cells, strides = grid(64, 32, (8, 16))
    assert cells.shape == (8 * 4 + 4 * 2, 2)
    assert cells[:3].tolist() == [[0, 0], [1, 0], [2, 0]] and cells[8].tolist() == [0, 1]
    assert strides[0] == 8 and strides[-1] == 16 and cells[32].tolist() == [0, 0]
    assert xywh_to_xyxy(np.array([[10, 20, 4, 6]], np.float32)).tolist() == [[8, 17, 12, 23]]


@settings(max_examples=50, deadline=None)
@given(idx=st.integers(0, 3548), dx=st.floats(-1, 1), dy=st.floats(-1, 1), lw=st.floats(-2, 2), lh=st.floats(-2, 2))
def test_yolox_decode_places_a_box_where_its_cell_is(idx: int, dx: float, dy: float, lw: float, lh: float) -> None:
    pred = np.zeros((1, 3549, 85), np.float32)
    pred[0, idx, :5] = [dx, dy, lw, lh, 0.8]
    pred[0, idx, 5 + 61] = 0.5  # toilet
    boxes, scores = decode_yolox(pred, 416, 416)
    cells, strides = grid(416, 416, (8, 16, 32))
    s = strides[idx]
    cx, cy = (cells[idx, 0] + dx) * s, (cells[idx, 1] + dy) * s
    w, h = np.exp(lw) * s, np.exp(lh) * s
    np.testing.assert_allclose(boxes[idx], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-5, atol=1e-3)
    assert scores[idx, 61] == pytest.approx(0.4) and scores.sum() == pytest.approx(0.4)
    with pytest.raises(ModelError, match="expected 3549"):
        decode_yolox(pred[:, :100], 416, 416)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), floor=st.floats(0.05, 0.95))
def test_yunet_decode_above_a_floor_is_the_full_decode_filtered(seed: int, floor: float) -> None:
    rng = np.random.default_rng(seed)
    outs = {}
    for s in (8, 16, 32):
        n = (96 // s) * (64 // s)
        outs[f"cls_{s}"] = rng.random((1, n, 1), np.float32)
        outs[f"obj_{s}"] = rng.random((1, n, 1), np.float32)
        outs[f"bbox_{s}"] = rng.normal(size=(1, n, 4)).astype(np.float32)
        outs[f"kps_{s}"] = rng.normal(size=(1, n, 10)).astype(np.float32)
    boxes, scores, kps = decode_yunet(outs, 96, 64)
    keep = scores >= floor
    b2, s2, k2 = decode_yunet(outs, 96, 64, min_score=floor)
    np.testing.assert_array_equal(s2, scores[keep])
    np.testing.assert_array_equal(b2, boxes[keep])
    np.testing.assert_array_equal(k2, kps[keep])


def test_yunet_decode_single_cell() -> None:
    outs = {}
    for s in (8, 16, 32):
        n = (64 // s) * (64 // s)
        outs[f"cls_{s}"] = np.zeros((1, n, 1), np.float32)
        outs[f"obj_{s}"] = np.zeros((1, n, 1), np.float32)
        outs[f"bbox_{s}"] = np.zeros((1, n, 4), np.float32)
        outs[f"kps_{s}"] = np.zeros((1, n, 10), np.float32)
    # stride 16, row 1, col 2 -> cell index 1*4+2 = 6
    outs["cls_16"][0, 6, 0] = 0.81
    outs["obj_16"][0, 6, 0] = 1.5  # clipped to 1
    outs["bbox_16"][0, 6] = [0.5, 0.25, np.log(2), 0.0]
    boxes, scores, kps = decode_yunet(outs, 64, 64)
    i = 64 + 6  # after the 8x8 grid of stride 8
    assert scores[i] == pytest.approx(0.9) and np.count_nonzero(scores) == 1
    cx, cy = (2 + 0.5) * 16, (1 + 0.25) * 16
    np.testing.assert_allclose(boxes[i], [cx - 16, cy - 8, cx + 16, cy + 8], rtol=1e-6)
    assert kps[i, :2].tolist() == [32.0, 16.0]
    del outs["kps_32"]
    with pytest.raises(ModelError, match="kps_32"):
        decode_yunet(outs, 64, 64)


def test_ultraface_priors_count_and_order() -> None:
    p = priors(320, 240)
    assert p.shape == (4420, 4)
    # First cell of stride 8 has three priors of 10, 16, 24 px at the same centre.
    np.testing.assert_allclose(p[:3, :2], [[4 / 320, 4 / 240]] * 3)
    np.testing.assert_allclose(p[:3, 2], [10 / 320, 16 / 320, 24 / 320])
