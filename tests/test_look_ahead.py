"""Look-ahead: a frame is released only once the next frame is decided, masked wherever the next
one is masked and withheld when the next one is withheld for what it shows.

The case it is for: someone entering shows a sliver on their first frame (a row of hair at the
bottom edge of a 720p frame) that no layer can tell from noise there, and a region one frame later.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_pipeline import ListSource, RecordingSink

from agent.clock import FakeClock
from agent.core.datatypes import Analysis, Decision, ForegroundBlob, Frame, MaskRegion
from agent.core.events import EventLog
from agent.core.pipeline import CameraPipeline
from agent.core.policy import CameraPolicy, ForegroundPolicy, look_ahead
from agent.core.ports import SourceInfo
from agent.geometry import BoxRel
from agent.vocab import Action, Mode, Style

BOTTOM = BoxRel(0.4, 0.9, 0.6, 1.0)
BLOB = MaskRegion("foreground:unexplained", "foreground", BOTTOM.to_points(), Style.SOLID)
ZONE = MaskRegion("sofa", "zone", BoxRel(0.0, 0.0, 0.2, 0.2).to_points(), Style.SOLID)


def d(i: int, action: Action, reasons: tuple[str, ...] = (), regions: tuple[MaskRegion, ...] = ()) -> Decision:
    return Decision("cam", i, i / 10, action, reasons, regions)


def test_a_frame_is_masked_where_the_next_frame_is_masked() -> None:
    out = look_ahead(d(1, Action.PASS), d(2, Action.MASK, ("foreground:unexplained",), (BLOB,)))
    assert out.action is Action.MASK and out.regions == (BLOB,)
    assert out.reasons == ("ahead:foreground:unexplained",)
    assert (out.frame_index, out.t_s) == (1, 0.1)  # still frame 1's decision


def test_look_ahead_only_adds_and_never_repeats_a_region() -> None:
    own = d(1, Action.MASK, ("zone:sofa",), (ZONE,))
    out = look_ahead(own, d(2, Action.MASK, ("zone:sofa", "foreground:unexplained"), (ZONE, BLOB, BLOB)))
    assert out.regions == (ZONE, BLOB) and out.reasons == ("zone:sofa", "ahead:foreground:unexplained")
    # Nothing new ahead: the frame's own decision, as it was.
    assert look_ahead(own, d(2, Action.MASK, ("zone:sofa",), (ZONE,))) is own
    assert look_ahead(own, d(2, Action.PASS)) is own


def test_only_what_may_have_just_come_into_view_is_masked_ahead() -> None:
    """A person or a face, and foreground; not a private object, whose box on the next frame is
    the same bed a few pixels off, nor a zone, the same on both frames."""
    face = MaskRegion("face", "detection", BoxRel(0.5, 0.1, 0.6, 0.2).to_points(), Style.BLUR)
    person = MaskRegion("person", "detection", BoxRel(0.4, 0.1, 0.7, 0.9).to_points(), Style.SOLID)
    bed = MaskRegion("bed", "detection", BoxRel(0.1, 0.5, 0.5, 0.9).to_points(), Style.SOLID)
    out = look_ahead(d(1, Action.PASS), d(2, Action.MASK, ("zone:sofa", "detection:bed", "detection:person",
                                                          "detection:face"), (ZONE, bed, person, face)))
    assert out.regions == (person, face) and out.reasons == ("ahead:person", "ahead:face")
    assert look_ahead(d(1, Action.PASS), d(2, Action.MASK, ("detection:bed",), (bed,))).action is Action.PASS


@pytest.mark.parametrize("reason", ["room:bathroom:person", "zone:bed:presence", "zone:bed:motion",
                                    "zone:bed:person", "detection:toilet", "mode:privacy",
                                    "mode:away:withhold_all", "restart_needed"])
def test_a_frame_is_withheld_when_the_next_is_withheld_for_what_it_shows_or_by_a_mode(reason: str) -> None:
    """What the next frame shows was most likely there a frame earlier; and the privacy switch,
    once on, lets out no frame decided just before it, as none after."""
    out = look_ahead(d(1, Action.MASK, ("zone:sofa",), (ZONE,)), d(2, Action.WITHHOLD, ("room:bathroom", reason)))
    assert out.action is Action.WITHHOLD and out.reasons == ("ahead:room:bathroom", f"ahead:{reason}")
    assert (out.frame_index, out.regions) == (1, ())


@pytest.mark.parametrize("reasons", [("lag:2.31s",), ("analysis_busy",), ("analysis_error:RuntimeError",),
                                     ("foreground:learning",), ("detections_stale:1.20s",), ("zone:bed:unknown",),
                                     ("zone:bed:warmup",), ("room:bathroom", "tamper:moved"), ("sink_backlog",),
                                     ("decode_damaged",), ("scene_cut:pending",), ("policy_error:KeyError",)])
def test_a_frame_is_withheld_when_the_next_is_withheld_unseen_or_unjudged(reasons: tuple[str, ...]) -> None:
    """Nothing then says this frame has no first sliver of someone entering: fail closed."""
    own = d(1, Action.PASS, ("room:bathroom",))
    out = look_ahead(own, d(2, Action.WITHHOLD, reasons))
    assert out.action is Action.WITHHOLD and out.reasons == tuple(f"ahead:{r}" for r in reasons)
    assert (out.frame_index, out.regions) == (1, ())


def test_nothing_ahead_or_a_withheld_frame_is_left_as_it_is() -> None:
    own = d(1, Action.PASS)
    assert look_ahead(own, None) is own
    held = d(1, Action.WITHHOLD, ("lag:3.00s",))
    assert look_ahead(held, d(2, Action.MASK, ("foreground:unexplained",), (BLOB,))) is held


# -- in the pipeline -------------------------------------------------------------------------


class Entering:
    """Foreground that first shows on frame `first` (the frames before it look empty)."""

    name = "foreground"

    def __init__(self, first: int) -> None:
        self.first = first

    def analyze(self, frame: Frame) -> Analysis:
        if frame.index < self.first:
            return Analysis()
        return Analysis(foreground=(ForegroundBlob(BOTTOM, BOTTOM.to_points(), 0.01),))


def _run(source: ListSource, first: int, clock: FakeClock | None = None) -> tuple[list[Decision], RecordingSink]:
    sink = RecordingSink()
    decisions: list[Decision] = []
    p = CameraPipeline(CameraPolicy("cam", foreground=ForegroundPolicy()), [Entering(first)], [sink],
                       lambda: Mode.HOME, EventLog(), clock=clock or FakeClock(),
                       on_decision=lambda dec, _i: decisions.append(dec))
    p.run(lambda: source)
    return decisions, sink


def test_the_frame_before_someone_is_first_seen_is_masked_where_they_are_next() -> None:
    decisions, sink = _run(ListSource(6), first=3)
    assert [x.action for x in decisions] == [Action.PASS, Action.PASS, Action.MASK, Action.MASK, Action.MASK,
                                             Action.MASK]
    assert decisions[2].reasons == ("ahead:foreground:unexplained",)
    assert decisions[3].reasons == ("foreground:unexplained",)
    # The pixels that left: frame 2's bottom middle is black, as on the frames after it.
    h, w = sink.frames[2].image.shape[:2]
    assert not sink.frames[2].image[int(0.95 * h), int(0.5 * w)].any()
    assert sink.frames[1].image[int(0.95 * h), int(0.5 * w)].any()


def test_the_last_frame_of_a_source_goes_out_on_its_own_decision() -> None:
    decisions, sink = _run(ListSource(4), first=10)
    assert [x.action for x in decisions] == [Action.PASS] * 4 and len(sink.frames) == 4


class QuietCamera:
    """A live camera that sends `n` frames, then nothing: once `quiet` is set, the clock runs on."""

    def __init__(self, n: int, clock: FakeClock, quiet: threading.Event, stop: threading.Event) -> None:
        self.info = SourceInfo("quiet", True, 10.0, None)
        self._left = n
        self._clock = clock
        self._quiet = quiet
        self._stop = stop

    def read(self) -> np.ndarray | None:
        if self._left <= 0:
            self._quiet.wait(10)
            self._clock.advance(5.0)  # longer than a frame may lag
            self._stop.wait(10)
            return None
        self._left -= 1
        return np.full((24, 32, 3), 90, np.uint8)

    def close(self) -> None:
        pass


def test_a_live_frame_whose_next_never_comes_is_withheld_for_lag() -> None:
    clock, quiet, stop = FakeClock(), threading.Event(), threading.Event()
    sink = RecordingSink()
    decisions: list[Decision] = []

    def on_decision(dec: Decision, _i: int | None) -> None:
        decisions.append(dec)
        if len(decisions) == 2:
            quiet.set()  # the third frame is held, waiting for a fourth that never comes
        if len(decisions) == 3:
            stop.set()

    p = CameraPipeline(CameraPolicy("cam", foreground=ForegroundPolicy()), [Entering(10)], [sink],
                       lambda: Mode.HOME, EventLog(), clock=clock, max_lag_s=2.0, on_decision=on_decision)
    runner = threading.Thread(target=p.run, args=(lambda: QuietCamera(3, clock, quiet, stop),), daemon=True)
    runner.start()
    try:
        assert stop.wait(10), decisions
    finally:
        stop.set()
        p.stop()
        runner.join(10)
    assert [x.action for x in decisions[:3]] == [Action.PASS, Action.PASS, Action.WITHHOLD]
    assert decisions[2].reasons[0].startswith("lag:")
    assert len(sink.frames) == 2


def test_the_frame_before_a_zone_withholds_counts_for_that_zone() -> None:
    """The tester's tools name the zone of a frame withheld ahead of it (busy zones, the demo)."""
    from agent.lab.replay import withhold_zone

    assert withhold_zone("ahead:zone:dressing:presence") == withhold_zone("zone:dressing:presence") == "dressing"
    assert withhold_zone("ahead:room:bathroom:person") is None


class Bathroom:
    """A private room someone walks into on frame `first`."""

    name = "room"

    def __init__(self, first: int) -> None:
        self.first = first

    def analyze(self, frame: Frame) -> Analysis:
        blobs = (ForegroundBlob(BOTTOM, BOTTOM.to_points(), 0.01),) if frame.index >= self.first else ()
        return Analysis(foreground=blobs)


def test_a_stretch_withheld_for_someone_in_a_private_room_starts_a_frame_early_with_one_event() -> None:
    events = EventLog()
    decisions: list[Decision] = []
    p = CameraPipeline(CameraPolicy("cam", foreground=ForegroundPolicy(), privacy_room="bathroom"), [Bathroom(3)],
                       [RecordingSink()], lambda: Mode.HOME, events, clock=FakeClock(),
                       on_decision=lambda dec, _i: decisions.append(dec))
    p.run(lambda: ListSource(6))
    assert [x.action for x in decisions] == [Action.PASS, Action.PASS] + [Action.WITHHOLD] * 4
    assert decisions[2].reasons == ("ahead:room:bathroom", "ahead:room:bathroom:person")
    assert decisions[3].reasons == ("room:bathroom", "room:bathroom:person")
    withheld = [e for e in events.events if e.kind == "withheld"]
    assert len(withheld) == 1 and withheld[0].details["frame"] == 2
