"""Unexplained foreground: what differs from the camera's learned empty scene.

A detector always misses something: the top of a head entering at the frame
edge before the person detector fires, an arm reaching out of a person's box,
a person partly behind others. This analyzer keeps a model of the camera's
empty scene and reports every region that differs from it as a
`ForegroundBlob`; the policy masks each blob no detection explains (and
leaves visible only one inside the box of a harmless class, a pet or a car).

Invariants:
- The empty scene is learned at start (the median of `warmup_frames`
  frames, so someone walking through is not learned) and after `relearn()`
  or a resolution change; meanwhile `foreground_ready` is False and the
  policy withholds (`foreground:learning`). Unknown means withhold.
- A region is never learned while it is foreground (nor the margin around
  it), so a person who stops moving stays foreground and stays masked: the
  presence rule of withhold zones (`agent.analysis.motion`). When most of
  the view is foreground (a cut to another scene, a moved camera) nothing is
  learned: the new scene stays masked until the owner relearns it.
- A change of the whole frame's brightness (auto exposure, a cloud, a lamp
  dimmed) is taken out before comparing: the empty scene is scaled by the
  ratio of the two frames' median levels, a statistic a person
  covering less than half of the view cannot move much.
- Slow change where nothing is in the foreground is followed (`learn_rate`).
- Work happens on a small colour copy (~320 px wide), blurred against codec
  noise, a pixel's difference being its largest over the three channels;
  regions smaller than `min_area_rel` are noise.
- A region stays masked for `hold_s` of stream time (`Frame.t_s`, not a
  frame count, so the cover does not shrink at a lower frame rate) after it
  was last foreground: its trail. Colour difference alone cannot see a
  person who matches the background, and the last sliver of someone leaving
  through an edge (a few pixels of hair the colour of the cupboard behind)
  or someone who is camouflaged for a few frames is exactly that; both lie
  inside where that person was a moment before. (Growing a blob that
  touches an edge, or by its motion, cannot help there: on that frame
  nothing differs, so there is no blob to grow.) The trail is reported as
  blobs of its own, outlined by their contour rather than a hull, so a
  harmless blob (a pet in its box) is explained alone and its trail covers
  the floor it just left, not the pet. A trail is never learned either.
- More regions than `_MAX_BLOBS` become one region around all of them: the
  policy's work stays bounded and nothing is dropped.
- The frame's border is compared at a finer scale (`_Band`): someone entering
  through an edge first shows a sliver there (the top of a head: five rows of
  a 720p frame) that the work resolution's 4x4 averages and blur dilute below
  `diff`. Each side's outermost `_BAND_WORK_PX` work pixels are compared on
  `Frame.half` (or the frame itself), against an empty state of their own,
  learned like the rest; a band pixel over `diff` marks the work pixels it lies
  in, and the size test then applies as everywhere else.
- A region that comes within twice its growth of a frame edge is joined to that
  edge (`_to_edges`): the part of someone entering that is nearest the edge can
  match the background and differ nowhere, and lies between what does differ
  and the edge. (The very first sliver, too thin for any of this on its own
  frame, is covered by the pipeline's look-ahead: `agent.core.policy.look_ahead`.)
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from agent.analysis.shrink import shrink_frame
from agent.config import ForegroundConfig
from agent.core.datatypes import Analysis, ForegroundBlob, Frame
from agent.geometry import BoxRel, PointRel

log = logging.getLogger(__name__)

_WORK_WIDTH_PX = 320
_MAX_BLOBS = 32
# Beyond this share of the view in the foreground, nothing is learned (a new scene, not drift).
_FREEZE_ALL_REL = 0.5
# The brightness ratio is trusted within these bounds; beyond them the whole view is foreground.
_GAIN_MIN, _GAIN_MAX = 0.5, 2.0
_OPEN = np.ones((3, 3), np.uint8)
# A trail grows by 2 px (work resolution) before its outline is traced: the traced polygon runs
# through boundary pixel centres and `approxPolyDP` may cut a corner by up to _TRAIL_EPS_PX.
_TRAIL_GROW = np.ones((5, 5), np.uint8)
_TRAIL_EPS_PX = 1.0
# Trail within 3 px (work resolution) of this frame's regions joins them: outline jitter, not motion.
_NEAR = np.ones((7, 7), np.uint8)
# Work pixels along each side of the frame that are also compared at the band's finer scale.
_BAND_WORK_PX = 2
# A region within twice its growth of a frame edge (and never less than this) is joined to it.
_EDGE_REACH_MIN_PX = 2


class _Band:
    """The border strips of one frame size: top, bottom, left and right, in the pixels of the
    band's source (`Frame.half`, or the frame where it has none), with their learned empty state.

    Each strip maps to the outermost work rows (or columns) it lies in, rounded outward, so a
    marked band pixel never lands inside the frame further than where it is."""

    def __init__(self, src_w: int, src_h: int, work: tuple[int, int]) -> None:
        ww, wh = work
        self.rows = min(src_h, math.ceil(_BAND_WORK_PX * src_h / wh))
        self.cols = min(src_w, math.ceil(_BAND_WORK_PX * src_w / ww))
        self.work_rows = min(wh, math.ceil(self.rows * wh / src_h))
        self.work_cols = min(ww, math.ceil(self.cols * ww / src_w))
        self.ref: list[np.ndarray] | None = None  # float32 BGR per strip, blurred
        self.warm: list[list[np.ndarray]] = []

    def strips(self, src: np.ndarray) -> list[np.ndarray]:
        r, c = self.rows, self.cols
        # Replicated, not reflected, at the border: the outermost row keeps its own colour.
        return [cv2.GaussianBlur(s, (3, 3), 0, borderType=cv2.BORDER_REPLICATE)
                for s in (src[:r], src[-r:], src[:, :c], src[:, -c:])]

    def work_views(self, a: np.ndarray) -> list[np.ndarray]:
        """The work-resolution views of `a` (wh x ww) that the strips map to, in the same order."""
        r, c = self.work_rows, self.work_cols
        return [a[:r], a[-r:], a[:, :c], a[:, -c:]]


class ForegroundAnalyzer:
    """`agent.core.ports.Analyzer`: foreground blobs against the learned empty scene of one camera."""

    name = "foreground"

    def __init__(self, cfg: ForegroundConfig, camera_id: str = "") -> None:
        self._cfg = cfg
        self._camera_id = camera_id
        self._size: tuple[int, int] | None = None
        self._work: tuple[int, int] = (0, 0)
        self._kernel = _OPEN
        self._reach = 0  # work pixels: a region this close to an edge is joined to it (`_to_edges`)
        self._ref: np.ndarray | None = None  # float32 BGR, blurred, work resolution
        self._warm: list[np.ndarray] = []
        # Stream time at which each work pixel was last inside a masked region (-inf: never).
        self._seen: np.ndarray | None = None
        self._last_t = -np.inf
        self._band: _Band | None = None

    def relearn(self) -> None:
        """Forget the empty scene and learn it again from the next frames (a deliberate re-mount)."""
        log.info("camera %s: foreground: relearning the empty scene", self._camera_id)
        self._ref, self._warm, self._seen = None, [], None
        self._band = None

    def _reset(self, w: int, h: int) -> None:
        self._size = (w, h)
        ww = min(_WORK_WIDTH_PX, w)
        wh = max(1, int(round(h * ww / w)))
        self._work = (ww, wh)
        r = int(round(self._cfg.dilate_rel * ww))
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)) if r > 0 else _OPEN
        self._reach = max(_EDGE_REACH_MIN_PX, 2 * r)
        self._ref, self._warm, self._seen = None, [], None
        self._band = None

    def _small(self, frame: Frame) -> np.ndarray:
        # Colour, not grey: a red shirt in front of a green wall of the same brightness is foreground.
        # From the frame's half-size copy (720p: one exact 2x area step to the work size); the
        # blur evens out codec noise.
        return cv2.GaussianBlur(shrink_frame(frame, self._work), (3, 3), 0)

    def analyze(self, frame: Frame) -> Analysis:
        if self._size != (frame.width_px, frame.height_px):
            self._reset(frame.width_px, frame.height_px)
        img = self._small(frame)
        src = frame.half if frame.half is not None else frame.image
        if self._band is None:  # dropped with the empty scene, on a new size or a relearn
            self._band = _Band(src.shape[1], src.shape[0], self._work)
        band = self._band
        strips = band.strips(src)
        if self._ref is None:
            self._warm.append(img)
            band.warm.append(strips)
            if len(self._warm) < self._cfg.warmup_frames:
                return Analysis(foreground_ready=False)
            # The median, not the mean: someone walking through the warm-up is not learned.
            self._ref = np.median(np.stack(self._warm), axis=0).astype(np.float32)  # float: learning is gradual
            band.ref = [np.median(np.stack(s), axis=0).astype(np.float32) for s in zip(*band.warm, strict=True)]
            self._warm, band.warm = [], []
        ref = self._ref
        assert band.ref is not None

        # Take out a change of the whole frame's brightness (medians of a sparse grid: cheap, robust).
        ref_med = float(np.median(ref[::4, ::4]))
        gain = float(np.median(img[::4, ::4])) / ref_med if ref_med > 1.0 else 1.0
        ww, wh = self._work
        if not _GAIN_MIN <= gain <= _GAIN_MAX:
            fg = np.ones((wh, ww), np.uint8)
        else:
            d = cv2.split(cv2.absdiff(img, cv2.convertScaleAbs(ref, alpha=gain)))
            # No opening against noise: it would erase a thin arm. Noise is blurred away above, and
            # what is left is dropped by the size test on each region.
            fg = (cv2.max(cv2.max(d[0], d[1]), d[2]) > self._cfg.diff).astype(np.uint8)
            self._mark_band(fg, strips, band.ref, gain)
        grown = cv2.dilate(fg, self._kernel)
        share = float(np.count_nonzero(fg)) / fg.size
        found = self._kept(fg, grown)
        kept = None if found is None else found[0]
        held = self._held(frame.t_s, kept)
        if share < _FREEZE_ALL_REL and self._cfg.learn_rate > 0:
            # Learn only where nothing is, or is near, the foreground, or was in the last `hold_s`:
            # a still person is never learned, nor one who briefly matches the background.
            quiet = ((grown == 0) if held is None else ((grown == 0) & ~held)).astype(np.uint8)
            cv2.accumulateWeighted(img, ref, self._cfg.learn_rate, mask=quiet)
            for strip, sref, q in zip(strips, band.ref, band.work_views(quiet), strict=True):
                h, w = strip.shape[:2]
                cv2.accumulateWeighted(strip, sref, self._cfg.learn_rate,
                                       mask=cv2.resize(q, (w, h), interpolation=cv2.INTER_NEAREST))
        if kept is None and (held is None or not held.any()):
            return Analysis()
        now = kept if kept is not None else np.zeros_like(fg, bool)
        trail: np.ndarray | None = None
        if held is not None and (held & ~now).any():
            # An outline jitters by a pixel or two from frame to frame: the part of the trail
            # that close to this frame's regions joins them (it is masked with them), so the
            # trail is what was left behind, not a fringe of slivers around every region.
            near = cv2.dilate(now.view(np.uint8), _NEAR).view(bool)
            now = now | (held & near)
            trail = (held & ~near).view(np.uint8)
        if trail is None and found is not None:
            blobs = self._hulls(fg, *found[1:])  # nothing held beyond this frame: its own labels
        else:
            blobs = self._regions(fg, now)
        if trail is not None and trail.any():
            blobs = _merge(blobs, self._trail_blobs(trail, fg))
        return Analysis(foreground=blobs)

    def _mark_band(self, fg: np.ndarray, strips: list[np.ndarray], refs: list[np.ndarray], gain: float) -> None:
        """Set the work pixels of `fg` (in place) that hold a band pixel over `diff`."""
        assert self._band is not None
        for strip, sref, view in zip(strips, refs, self._band.work_views(fg), strict=True):
            d = cv2.split(cv2.absdiff(strip, cv2.convertScaleAbs(sref, alpha=gain)))
            over = cv2.compare(cv2.max(cv2.max(d[0], d[1]), d[2]), float(self._cfg.diff), cv2.CMP_GT)  # 0 / 255
            if not cv2.countNonZero(over):
                continue
            # An area shrink of 0 / 255 is above 0 wherever any band pixel was over: "any", not "most".
            view[cv2.resize(over, (view.shape[1], view.shape[0]), interpolation=cv2.INTER_AREA) > 0] = 1

    def _kept(self, fg: np.ndarray, grown: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                                 np.ndarray] | None:
        """(mask, labels, stats, kept, per): the grown regions large enough to count (`mask`, bool;
        `kept` their label numbers, `per` their foreground pixels by label), or None when none."""
        if not fg.any():
            return None
        ww, wh = self._work
        n, labels, stats = _components(grown)
        if n <= 1:
            return None
        min_px = max(1, int(round(self._cfg.min_area_rel * ww * wh)))
        # Pixels of the undilated foreground per grown region: the size test is on what changed.
        per = np.bincount(labels[fg > 0], minlength=n)
        lut = per >= min_px
        lut[0] = False
        if not lut.any():
            return None
        return np.asarray(lut[labels]), labels, stats, np.flatnonzero(lut), per

    def _held(self, t_s: float, kept: np.ndarray | None) -> np.ndarray | None:
        """Stamp this frame's regions with `t_s`; return where a region was within `hold_s` (bool,
        this frame's included), or None when no trail is kept. Cost: a compare and a masked
        store at work resolution."""
        hold = self._cfg.hold_s
        if hold <= 0:
            return None
        ww, wh = self._work
        if self._seen is None:
            self._seen = np.full((wh, ww), -np.inf, np.float32)
        seen = self._seen
        t = float(t_s)
        if not np.isfinite(t):
            if not np.isfinite(self._last_t):
                return None  # no usable time yet: this frame's own regions are masked, nothing older
            t = self._last_t  # an unusable clock holds the trail where it was, never drops it
        elif t < self._last_t:
            # Stream time went back (a source restarted): restamp what is held at the new time, so
            # it stays masked for `hold_s` from now, neither dropped nor held for ever.
            np.minimum(seen, t, out=seen)
        self._last_t = t
        if kept is not None:
            seen[kept] = t
        return np.asarray(seen >= t - hold)

    def _regions(self, fg: np.ndarray, now: np.ndarray) -> tuple[ForegroundBlob, ...]:
        """One blob per connected region of `now` (bool), outlined by its convex hull."""
        n, labels, stats = _components(now.view(np.uint8))
        if n <= 1:
            return ()
        return self._hulls(fg, labels, stats, np.arange(1, n), np.bincount(labels[fg > 0], minlength=n))

    def _hulls(self, fg: np.ndarray, labels: np.ndarray, stats: np.ndarray, ids: np.ndarray,
               per: np.ndarray) -> tuple[ForegroundBlob, ...]:
        """A blob per label in `ids`, outlined by its convex hull (`per`: foreground pixels by label)."""
        ww, wh = self._work
        if len(ids) > _MAX_BLOBS:
            x0 = int(stats[ids, cv2.CC_STAT_LEFT].min())
            y0 = int(stats[ids, cv2.CC_STAT_TOP].min())
            x1 = int((stats[ids, cv2.CC_STAT_LEFT] + stats[ids, cv2.CC_STAT_WIDTH]).max()) - 1
            y1 = int((stats[ids, cv2.CC_STAT_TOP] + stats[ids, cv2.CC_STAT_HEIGHT]).max()) - 1
            return (_blob_from_box(x0, y0, x1, y1, float(per[ids].sum()) / (ww * wh), ww, wh),)
        out = []
        for i in (int(v) for v in ids):
            x, y, bw, bh, _area = (int(v) for v in stats[i])
            contours, _ = cv2.findContours((labels[y:y + bh, x:x + bw] == i).astype(np.uint8),
                                           cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            pts = _to_edges(np.concatenate(contours).reshape(-1, 2) + (x, y), ww, wh, self._reach)
            hull = cv2.convexHull(pts).reshape(-1, 2)
            x0, y0 = (int(v) for v in pts.min(axis=0))
            x1, y1 = (int(v) for v in pts.max(axis=0))
            out.append(_blob(hull, x0, y0, x1, y1, int(per[i]) / (ww * wh), ww, wh))
        return tuple(out)

    def _trail_blobs(self, trail: np.ndarray, fg: np.ndarray) -> tuple[ForegroundBlob, ...]:
        """One blob per connected part of the trail, outlined by its (simplified) contour.

        Not a hull: the trail behind something moving is a crescent around where it is now, and
        a hull would cover that too (a pet its box explains). `area_rel` counts what differs from
        the empty scene inside the trail now (usually nothing: that is why it is a trail)."""
        ww, wh = self._work
        grown = cv2.dilate(trail, _TRAIL_GROW)
        contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        out = []
        for c in contours:
            x, y, bw, bh = cv2.boundingRect(c)
            poly = cv2.approxPolyDP(c, _TRAIL_EPS_PX, True).reshape(-1, 2)
            area = int(np.count_nonzero(fg[y:y + bh, x:x + bw] & grown[y:y + bh, x:x + bw]))
            box = BoxRel(_rel(x, ww), _rel(y, wh), _rel(x + bw, ww), _rel(y + bh, wh))
            if len(poly) < 3:
                out.append(ForegroundBlob(box, box.to_points(), area / (ww * wh)))
                continue
            # Vertices are pixel indices: their centres, as in `_blob`; the 2 px growth above
            # covers the half pixel outside each boundary pixel. The growth stops at the frame's
            # border, so a vertex on a border pixel goes to the frame edge itself: the last
            # sliver of someone leaving through an edge is in that outermost row.
            out.append(ForegroundBlob(box, _points(_edges(poly[:, 0], ww), _edges(poly[:, 1], wh)), area / (ww * wh)))
        return tuple(out)


def _components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(count, labels, stats) of the 8-connected regions of `mask`, background included.

    Grana's block-based labelling, named rather than OpenCV's default: at the work size it takes
    0.10 instead of 0.24 ms a call here (two calls a frame on busy footage), and it gives the
    same labels in the same order (the blobs of the CCTV clip's frames were identical).
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_GRANA)
    return n, labels, stats


def _merge(now: tuple[ForegroundBlob, ...], trail: tuple[ForegroundBlob, ...]) -> tuple[ForegroundBlob, ...]:
    if len(now) + len(trail) <= _MAX_BLOBS:
        return now + trail
    # Too many: one box around all of them (bounded work, nothing dropped).
    boxes = [b.box for b in now + trail]
    box = BoxRel(min(b.x0_rel for b in boxes), min(b.y0_rel for b in boxes),
                 max(b.x1_rel for b in boxes), max(b.y1_rel for b in boxes))
    return (ForegroundBlob(box, box.to_points(), sum(b.area_rel for b in now + trail)),)


def _to_edges(pts: np.ndarray, ww: int, wh: int, reach: int) -> np.ndarray:
    """A region's outline points (work pixels, N x 2), with its extent on each frame edge it comes
    within `reach` of added: its hull then runs to that edge.

    Someone entering through an edge is joined to it, but the part of them between what differs
    and the edge can match the background (grey trousers against a grey wall, entering from the
    top): a region that stops just short of an edge most likely goes on to it, and the strip
    between is masked with it."""
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    extra = []
    if y0 <= reach:
        extra += [(x0, 0), (x1, 0)]
    if y1 >= wh - 1 - reach:
        extra += [(x0, wh - 1), (x1, wh - 1)]
    if x0 <= reach:
        extra += [(0, y0), (0, y1)]
    if x1 >= ww - 1 - reach:
        extra += [(ww - 1, y0), (ww - 1, y1)]
    if not extra:
        return pts
    return np.concatenate([pts, np.asarray(extra, pts.dtype)])


def _rel(v: float, size: int) -> float:
    return min(1.0, max(0.0, v / size))


def _edges(v: np.ndarray, size: int) -> np.ndarray:
    """Pixel indices to relative coordinates of their centres; the border pixels to the edge itself."""
    return np.where(v <= 0, 0.0, np.where(v >= size - 1, 1.0, (v + 0.5) / size))


def _points(xs: np.ndarray, ys: np.ndarray) -> tuple[PointRel, ...]:
    # The coordinates are worked out in numpy, a few calls per blob rather than a few per vertex
    # (a frame has about a hundred): on a busy hub every Python step of a camera's thread is time
    # another camera's thread waits for the GIL. Each point is still checked by PointRel.
    return tuple(map(PointRel, xs.tolist(), ys.tolist()))


def _blob(hull: np.ndarray, x0: int, y0: int, x1: int, y1: int, area_rel: float, ww: int, wh: int) -> ForegroundBlob:
    box = BoxRel(_rel(x0, ww), _rel(y0, wh), _rel(x1 + 1, ww), _rel(y1 + 1, wh))
    if len(hull) < 3:
        return ForegroundBlob(box, box.to_points(), area_rel)
    # Hull vertices are pixel indices; push each half a pixel outward from the centre so the
    # polygon covers the pixels on its outline, not only their centres.
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    c = hull.astype(np.float64) + 0.5
    px = c[:, 0] + np.where(c[:, 0] >= cx, 0.5, -0.5)
    py = c[:, 1] + np.where(c[:, 1] >= cy, 0.5, -0.5)
    return ForegroundBlob(box, _points(np.clip(px / ww, 0.0, 1.0), np.clip(py / wh, 0.0, 1.0)), area_rel)


def _blob_from_box(x0: int, y0: int, x1: int, y1: int, area_rel: float, ww: int, wh: int) -> ForegroundBlob:
    box = BoxRel(_rel(x0, ww), _rel(y0, wh), _rel(x1 + 1, ww), _rel(y1 + 1, wh))
    return ForegroundBlob(box, box.to_points(), area_rel)
