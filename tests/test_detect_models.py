"""Real detectors on the shared photos: YuNet vs the OpenCV oracle, YOLOX objects, bad inputs, bad models."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from detect_support import (
    ASTRONAUT,
    BATHROOM_SINK,
    BEDROOM_1,
    BEDROOM_2,
    GROUP,
    INDOOR_PEOPLE,
    NEGATIVES,
    TOILET_GREY,
    TOILET_PERSON,
    WANTED,
    detector,
    model_cache,
    photo,
)

from agent.config import OnnxRuntimeConfig
from agent.detect import base as base_mod
from agent.detect import session as sess_mod
from agent.detect.base import Detector, OnnxDetector
from agent.detect.prep import geometry, resize_into
from agent.detect.registry import REGISTRY, load_detector
from agent.errors import AnalysisError, ModelError
from agent.geometry import BoxRel
from models.install import install, load_manifest


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_cache(tmp_path_factory)


def _labels(d: Detector, img: np.ndarray) -> Counter[str]:
    return Counter(x.label for x in d.detect(img))


# --- YuNet against cv2.FaceDetectorYN -------------------------------------------------


@pytest.mark.parametrize("name", [ASTRONAUT, GROUP, INDOOR_PEOPLE, TOILET_PERSON])
def test_yunet_matches_opencv_oracle(cache: Path, name: str) -> None:
    img = photo(name)
    ours = detector(cache, "yunet_s_640").detect(img)
    # Same letterboxed 640x640 input for the oracle, so only the decoder differs.
    box = geometry(img.shape[1], img.shape[0], 640, 640, "letterbox_tl")
    canvas = resize_into(img, box, 0)
    oracle = cv2.FaceDetectorYN.create(str(cache / "face_detection_yunet_2023mar.onnx"), "", (640, 640), 0.5, 0.3, 5000)
    _, faces = oracle.detect(canvas)
    faces = np.zeros((0, 15), np.float32) if faces is None else faces
    assert len(faces) >= 1
    assert len(ours) == len(faces)
    for f in faces:
        x, y, w, h = (float(v) for v in f[:4])
        r = box.boxes_to_rel(np.array([[x, y, x + w, y + h]], np.float32))[0]
        ref = BoxRel.clipped(*(float(v) for v in r))
        best = max(ours, key=lambda d: d.box.iou(ref))
        assert best.box.iou(ref) > 0.98
        assert best.score == pytest.approx(float(f[14]), abs=1e-3)


def test_yunet_finds_the_group_faces_at_every_size(cache: Path) -> None:
    assert _labels(detector(cache, "yunet_s_640"), photo(GROUP))["face"] >= 12
    assert _labels(detector(cache, "yunet_s_320"), photo(GROUP))["face"] >= 10
    assert _labels(detector(cache, "yunet_s_dynamic"), photo(GROUP))["face"] >= 12


def test_ultraface_agrees_with_yunet_on_the_astronaut(cache: Path) -> None:
    [y] = detector(cache, "yunet_s_640").detect(photo(ASTRONAUT))
    u = [d for d in detector(cache, "ultraface_rfb_320").detect(photo(ASTRONAUT)) if d.score > 0.7]
    assert len(u) == 1 and u[0].box.iou(y.box) > 0.7


# --- objects ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "must"),
    [
        (BEDROOM_1, {"bed"}),
        (BEDROOM_2, {"bed"}),
        (TOILET_PERSON, {"toilet", "person"}),
        (TOILET_GREY, {"toilet"}),
        (BATHROOM_SINK, {"sink"}),
        (ASTRONAUT, {"person"}),
    ],
)
def test_yolox_finds_private_objects_and_people(cache: Path, name: str, must: set[str]) -> None:
    found = _labels(detector(cache, "yolox_nano"), photo(name))
    assert must <= set(found), found
    assert set(found) <= WANTED - {"face"}


def test_yolox_counts_people_in_the_group(cache: Path) -> None:
    assert _labels(detector(cache, "yolox_nano"), photo(GROUP))["person"] >= 8


@pytest.mark.parametrize("name", NEGATIVES)
def test_yolox_negatives_have_no_private_objects_or_people(cache: Path, name: str) -> None:
    assert not _labels(detector(cache, "yolox_nano"), photo(name))


@pytest.mark.parametrize(("name", "label"), [(BEDROOM_1, "bed"), (TOILET_GREY, "toilet"), (BATHROOM_SINK, "sink")])
def test_nanodet_finds_private_objects(cache: Path, name: str, label: str) -> None:
    assert label in _labels(detector(cache, "nanodet_m_416"), photo(name))


def test_object_box_is_where_the_bed_is(cache: Path) -> None:
    [bed] = [d for d in detector(cache, "yolox_nano").detect(photo(BEDROOM_1)) if d.label == "bed"]
    # The bed fills the lower-left of the photo.
    assert bed.box.y0_rel > 0.4 and bed.box.y1_rel > 0.9 and bed.box.x0_rel < 0.1 and bed.box.area_rel > 0.15


def test_wanted_labels_and_thresholds_filter(cache: Path) -> None:
    only_beds = load_detector("yolox_nano", cache=cache, wanted=frozenset({"bed"}))
    assert set(_labels(only_beds, photo(TOILET_PERSON))) == set()
    assert only_beds.labels == frozenset({"bed"})
    strict = load_detector("yolox_nano", cache=cache, thresholds={"person": 0.99}, wanted=frozenset({"person"}))
    assert not strict.detect(photo(GROUP))
    # Unlisted COCO labels can be asked for too (names use underscores).
    tables = load_detector("yolox_nano", cache=cache, wanted=frozenset({"diningtable", "chair"}))
    assert tables.labels == frozenset({"diningtable", "chair"})


def test_cameras_with_the_same_settings_share_one_detector(cache: Path, tmp_path: Path) -> None:
    # One ONNX Runtime session per model and settings, not one per camera (memory per camera).
    a = load_detector("yolox_nano", cache=cache, wanted=frozenset({"person", "bed"}))
    b = load_detector("yolox_nano", cache=cache, wanted=frozenset({"bed", "person"}))
    assert a is b
    assert load_detector("yolox_nano", cache=cache, wanted=frozenset({"person"})) is not a
    assert load_detector("yolox_nano", cache=cache, wanted=frozenset({"person", "bed"}),
                         thresholds={"person": 0.9}) is not a
    assert load_detector("yolox_nano", cache=cache, wanted=frozenset({"person", "bed"}),
                         onnx=OnnxRuntimeConfig(intra_op_threads=2)) is not a
    # Sharing never skips the file check: a copy of the cache whose file is then damaged fails
    # to load, although the same settings are loaded from the intact cache.
    other = tmp_path / "cache"
    other.mkdir()
    for f in cache.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    assert load_detector("yolox_nano", cache=other, wanted=frozenset({"person", "bed"})) is not a
    data = bytearray((other / "yolox_nano.onnx").read_bytes())
    data[100] ^= 0xFF
    (other / "yolox_nano.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError):
        load_detector("yolox_nano", cache=other, wanted=frozenset({"person", "bed"}))
    assert load_detector("yolox_nano", cache=cache, wanted=frozenset({"person", "bed"})) is a


def test_inference_slots_leave_half_the_cores_to_the_rest() -> None:
    # Two runs at once on a 2-core machine slowed each other and everything else down
    # (base.inference_slots): one there, and never none on a machine of one core.
    assert [base_mod.inference_slots(n) for n in (1, 2, 3, 4, 8)] == [1, 1, 1, 2, 4]
    assert base_mod.INFERENCE_SLOTS == base_mod.inference_slots(base_mod._cores())


def test_inferences_in_flight_are_bounded(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Four lanes ask at once; two slots: two run, two wait for a slot (ONNX Runtime keeps the
    # working memory of every run in flight). Thresholds of its own: a detector nobody shares.
    det = load_detector("yolox_nano", cache=cache, wanted=frozenset({"person"}), thresholds={"person": 0.77})
    assert isinstance(det, OnnxDetector)
    cv = threading.Condition()
    state = {"asked": 0, "active": 0, "peak": 0, "open": False}

    class Slots:
        inner = threading.BoundedSemaphore(2)

        def __enter__(self) -> None:
            with cv:
                state["asked"] += 1
                cv.notify_all()
            self.inner.acquire()

        def __exit__(self, *exc: object) -> None:
            self.inner.release()

    real = det.session

    class Gated:
        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            with cv:
                state["active"] += 1
                state["peak"] = max(state["peak"], state["active"])
                cv.notify_all()
                assert cv.wait_for(lambda: state["open"], timeout=30)
                state["active"] -= 1
            return list(real.run(names, feeds))

    monkeypatch.setattr(base_mod, "_inference_slots", Slots())
    monkeypatch.setattr(det, "session", Gated())
    img = photo(GROUP)
    found: list[int] = []
    lanes = [threading.Thread(target=lambda: found.append(len(det.detect(img)))) for _ in range(4)]
    for t in lanes:
        t.start()
    with cv:
        assert cv.wait_for(lambda: state["asked"] == 4 and state["active"] == 2, timeout=30)
        state["open"] = True
        cv.notify_all()
    for t in lanes:
        t.join(30)
    assert state["peak"] == 2
    assert len(found) == 4 and min(found) >= 1  # every lane still got its people


# --- bad input ---------------------------------------------------------------------------


def test_bad_frames(cache: Path) -> None:
    faces = detector(cache, "yunet_s_640")
    objects = detector(cache, "yolox_nano")
    for d in (faces, objects):
        with pytest.raises(AnalysisError, match="non-empty"):
            d.detect(np.zeros((0, 0, 3), np.uint8))
        with pytest.raises(AnalysisError, match="uint8"):
            d.detect(photo(ASTRONAUT).astype(np.float32))
        assert d.detect(np.zeros((1, 1, 3), np.uint8)) == ()
        assert d.detect(np.full((2, 3000, 3), 255, np.uint8)) == ()
    grey = cv2.cvtColor(photo(ASTRONAUT), cv2.COLOR_BGR2GRAY)
    assert _labels(faces, grey)["face"] == 1
    assert _labels(faces, grey[..., None])["face"] == 1


def test_very_large_frame_maps_back_to_the_same_place(cache: Path) -> None:
    img = photo(ASTRONAUT)
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, 500:3500] = cv2.resize(img, (3000, 3000), interpolation=cv2.INTER_LINEAR)
    [small_face] = detector(cache, "yunet_s_640").detect(img)
    [big_face] = detector(cache, "yunet_s_640").detect(big)
    # Same face, in the big frame's coordinates: x is squeezed into 500..3500 of 4000.
    expected = BoxRel(
        (500 + small_face.box.x0_rel * 3000) / 4000, small_face.box.y0_rel,
        (500 + small_face.box.x1_rel * 3000) / 4000, small_face.box.y1_rel,
    )
    assert big_face.box.iou(expected) > 0.8


# --- bad models ------------------------------------------------------------------------------


def _custom_manifest(tmp_path: Path, name: str, file: str, data: bytes, input_shape: str, decoder: str = "yunet") -> dict:
    import hashlib

    from models.install import _COLUMNS

    row = [name, "face", file, str(len(data)), hashlib.sha256(data).hexdigest(), "MIT", "https://example.invalid/m",
           input_shape, "resize=letterbox_tl;pad=0;order=bgr", decoder, "face", ""]
    p = tmp_path / "MANIFEST.tsv"
    p.write_text("\t".join(_COLUMNS) + "\n" + "\t".join(row) + "\n", encoding="utf-8")
    return load_manifest(p)


def test_input_shape_must_match_the_manifest(cache: Path, tmp_path: Path) -> None:
    # A genuine, intact YuNet file whose declared input (320x320) is not what the manifest says (640x640).
    data = (cache / "yunet_s_320_320.onnx").read_bytes()
    (tmp_path / "swapped.onnx").write_bytes(data)
    m = _custom_manifest(tmp_path, "swapped", "swapped.onnx", data, "1x3x640x640")
    with pytest.raises(ModelError, match=r"declares input shape \[1, 3, 320, 320\], the manifest says 1x3x640x640"):
        load_detector("swapped", cache=tmp_path, manifest=m)


def test_yolox_input_shape_is_checked_before_its_dims_are_rewritten(cache: Path, tmp_path: Path) -> None:
    # YOLOX runs with re-declared symbolic dims; the file's original declaration is still checked.
    data = (cache / "yolox_nano.onnx").read_bytes()
    (tmp_path / "swapped.onnx").write_bytes(data)
    m = _custom_manifest(tmp_path, "swapped", "swapped.onnx", data, "1x3x640x640", decoder="yolox")
    with pytest.raises(ModelError, match=r"declares input shape \[1, 3, 416, 416\], the manifest says 1x3x640x640"):
        load_detector("swapped", cache=tmp_path, manifest=m)
    # Cut short, the rewrite itself refuses the bytes with a ModelError (never a raw exception).
    cut = data[: len(data) // 2]
    (tmp_path / "cut.onnx").write_bytes(cut)
    m = _custom_manifest(tmp_path, "cut", "cut.onnx", cut, "1x3x416x416", decoder="yolox")
    with pytest.raises(ModelError, match=r"model 'cut': .*cut.onnx is not a usable ONNX file: truncated"):
        load_detector("cut", cache=tmp_path, manifest=m)


def test_truncated_onnx_is_a_model_error(cache: Path, tmp_path: Path) -> None:
    data = (cache / "yunet_s_320_320.onnx").read_bytes()[:5000]
    (tmp_path / "cut.onnx").write_bytes(data)
    # Even with a manifest that matches the truncated bytes, ONNX Runtime's refusal is a ModelError.
    m = _custom_manifest(tmp_path, "cut", "cut.onnx", data, "1x3x320x320")
    with pytest.raises(ModelError, match="ONNX Runtime cannot load"):
        load_detector("cut", cache=tmp_path, manifest=m)


def test_truncated_file_in_cache_fails_its_hash(cache: Path, tmp_path: Path) -> None:
    install(["yunet_s_320"], from_dir=cache, cache=tmp_path)
    f = tmp_path / "yunet_s_320_320.onnx"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(ModelError, match="5000 bytes.*truncated"):
        load_detector("yunet_s_320", cache=tmp_path)


def test_wrong_kind_and_unknown_plugin(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="objects model, not a face model"):
        load_detector("yolox_nano", kind="face", cache=cache)
    data = b"x"
    (tmp_path / "x.onnx").write_bytes(data)
    m = _custom_manifest(tmp_path, "x", "x.onnx", data, "1x3x8x8", decoder="magic")
    with pytest.raises(ModelError, match="no detector plugin 'magic'"):
        load_detector("x", cache=tmp_path, manifest=m)
    assert set(REGISTRY) == {"yunet", "yolox", "nanodet", "ultraface", "centerface"}


def test_fixed_model_rejects_another_input_size(cache: Path) -> None:
    with pytest.raises(ModelError, match="fixed input 640x640"):
        load_detector("yunet_s_640", cache=cache, input_size=(320, 320))
    d = load_detector("yunet_s_dynamic", cache=cache, input_size=(320, 256))
    assert (d.in_w_px, d.in_h_px) == (320, 256)  # type: ignore[attr-defined]
    assert _labels(d, photo(ASTRONAUT))["face"] == 1


def test_session_options_come_from_config(caplog: pytest.LogCaptureFixture) -> None:
    cfg = OnnxRuntimeConfig(intra_op_threads=2, inter_op_threads=1, graph_optimization="basic",
                            providers=["NoSuchProvider", "CPUExecutionProvider"])
    so = sess_mod.session_options(cfg)
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.graph_optimization_level == sess_mod._OPT_LEVEL["basic"]
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert sess_mod.providers(cfg, "m") == ["CPUExecutionProvider"]
    assert "NoSuchProvider is not available" in caplog.text
    with pytest.raises(ModelError, match="none of the configured providers"):
        sess_mod.providers(OnnxRuntimeConfig(providers=["NoSuchProvider"]), "m")


def test_sessions_share_one_cpu_arena_and_keep_no_copy_of_the_model(cache: Path) -> None:
    """Every session is built on the process's one CPU arena, and a rewritten model (YOLOX, YuNet
    with fitted inputs) is not kept in memory by ONNX Runtime's wrapper once the session exists."""
    assert sess_mod.shared_cpu_arena()
    opts = sess_mod.session_options(OnnxRuntimeConfig())
    assert opts.get_session_config_entry("session.use_env_allocators") == "1"
    objects = load_detector("yolox_nano", kind="objects", cache=cache)
    faces = load_detector("yunet_s_dynamic", kind="face", cache=cache)
    for det in (objects, faces):
        assert isinstance(det, OnnxDetector)
        assert getattr(det.session, "_model_bytes", None) is None
    img = np.full((360, 640, 3), 120, np.uint8)
    assert objects.detect(img) == () and faces.detect(img) == ()  # both run on the shared arena
