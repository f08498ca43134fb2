"""How far a live camera's reader is behind the camera (`agent.media.streamclock`), driven with
packet times: prompt reading, a reader falling behind, clock drift, and timestamp jumps."""

from __future__ import annotations

import pytest

from agent.media.streamclock import LIVE_WAITS, RISE_PER_S, StreamClock

FPS = 15.0
DT = 1 / FPS


def _read(clock: StreamClock, k: int, now: float, delay: float = 0.05) -> float:
    """Frame k (stream time k/FPS) arrives at `now`, is handed out at once: its backlog."""
    pts = k * DT
    clock.arrived(now + delay, pts)
    return clock.behind_s(now + delay, pts)


def test_a_prompt_reader_is_not_behind() -> None:
    c = StreamClock()
    assert c.behind_s(5.0, 1.0) == 0.0  # nothing arrived yet: unknown, not lag
    # Network jitter of up to 20 ms either way around a 50 ms delay.
    jitter = [0.0, 0.02, -0.02, 0.01, 0.0, -0.01, 0.02]
    worst = max(_read(c, k, 100.0 + k * DT, 0.05 + jitter[k % len(jitter)]) for k in range(3000))
    assert worst <= 0.045


def test_a_reader_falling_behind_is_behind_by_what_it_lost() -> None:
    c = StreamClock()
    for k in range(30):  # a second read promptly
        _read(c, k, 10.0 + k * DT)
    # Then it takes 80 ms a frame from a 15 fps camera: 13.3 ms later every frame. The packets
    # wait in the network: none is lost, each comes out later.
    t = 10.0 + 30 * DT
    for k in range(30, 30 + 375):
        behind = _read(c, k, t)
        t += 0.08
    expected = 375 * (0.08 - DT)
    assert behind == pytest.approx(expected, abs=0.05 + RISE_PER_S * 30)
    assert behind > 4.5


def test_a_cameras_slow_clock_does_not_read_as_lag() -> None:
    # The camera's clock runs 300 ppm slow: every packet looks 0.3 ms a second later. For an hour.
    c = StreamClock()
    worst = 0.0
    for k in range(int(3600 * FPS)):
        now = 50.0 + k * DT * (1 + 300e-6)
        worst = max(worst, _read(c, k, now))
    assert worst < 0.01


def test_a_cameras_fast_clock_does_not_read_as_lag() -> None:
    c = StreamClock()
    worst = max(_read(c, k, 50.0 + k * DT * (1 - 300e-6)) for k in range(int(600 * FPS)))
    assert worst < 0.001


def test_timestamps_that_go_back_start_a_new_floor() -> None:
    # The camera restarted its clock: the next packet says an hour earlier. Not an hour of lag.
    c = StreamClock()
    for k in range(100):
        _read(c, k, 20.0 + k * DT)
    now = 20.0 + 100 * DT
    assert _read(c, -54_000, now) == 0.0
    assert _read(c, -54_000 + 1, now + DT) == pytest.approx(0.0, abs=1e-9)


def test_timestamps_that_jump_forward_are_not_lag() -> None:
    c = StreamClock()
    for k in range(100):
        _read(c, k, 20.0 + k * DT)
    # A gap in the stream: ten seconds of it never sent.
    assert _read(c, 100 + 150, 20.0 + 100 * DT) == 0.0
    assert _read(c, 100 + 151, 20.0 + 101 * DT) == pytest.approx(0.0, abs=1e-9)


def test_a_backlog_that_drains_reads_less_and_less() -> None:
    c = StreamClock()
    for k in range(30):
        _read(c, k, k * DT)
    # The reader stalled for 3 s, then reads the waiting frames as fast as they come out.
    t = 30 * DT + 3.0
    seen = []
    for k in range(30, 30 + 60):
        seen.append(_read(c, k, t))
        t += 0.01
    assert seen[0] == pytest.approx(3.0, abs=0.01)
    assert seen == sorted(seen, reverse=True)
    assert seen[10] == pytest.approx(3.0 - 10 * (DT - 0.01), abs=0.01)
    assert seen[-1] == 0.0  # caught up


def test_b_frames_out_of_order_are_not_a_discontinuity() -> None:
    # Decode order I P B B P B B: presentation times go back and forth, decode times do not.
    c = StreamClock()
    order = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8]
    for i, k in enumerate(order):
        now = 1.0 + i * DT + 0.05
        c.arrived(now, k * DT, (i - 1) * DT)
    floor = c.floor_s
    assert floor is not None
    # The floor is the earliest arrival against its presentation time: the P-frame sent ahead.
    assert floor == pytest.approx(min(1.0 + i * DT + 0.05 - k * DT for i, k in enumerate(order)), abs=1e-3)


def test_packets_without_timestamps_change_nothing() -> None:
    c = StreamClock()
    c.arrived(3.0, None)
    assert c.floor_s is None and c.behind_s(3.0, None) == 0.0
    c.arrived(3.0, 1.0)
    assert c.behind_s(9.0, None) == 0.0


def test_a_catching_up_reader_that_waits_for_packets_is_caught_up_whatever_their_timestamps() -> None:
    """A camera that stamps a nominal 30 fps and sends 15: its timestamps run at half speed, and
    the stream looks half a second further behind every second. Catching up, the reader finds it
    has to wait for each packet: they come live, and the floor starts again at them."""
    c = StreamClock()
    for k in range(60):  # four seconds, read promptly: the timestamps say 2 s behind by now
        c.arrived(10.0 + k * DT, k * DT / 2, waited_s=DT)
    assert c.behind_s(10.0 + 59 * DT, 59 * DT / 2) == pytest.approx(59 * DT / 2, abs=0.01)
    # Catching up now: a waited-for packet could be a stall elsewhere; three in a row are live.
    for i in range(LIVE_WAITS - 1):
        now = 10.0 + (60 + i) * DT
        c.arrived(now, (60 + i) * DT / 2, waited_s=DT, live_wait_s=DT / 2)
        assert c.behind_s(now, (60 + i) * DT / 2) > 1.9
    k = 60 + LIVE_WAITS - 1
    c.arrived(10.0 + k * DT, k * DT / 2, waited_s=DT, live_wait_s=DT / 2)
    # The floor had to rise by two seconds: these timestamps place no frame any more.
    assert not c.trusted
    for j in range(k, k + 100):
        c.arrived(10.0 + j * DT, j * DT / 2, waited_s=DT)
        assert c.behind_s(10.0 + j * DT, j * DT / 2) == 0.0


def test_a_caught_up_reader_with_right_timestamps_keeps_them() -> None:
    c = StreamClock()
    for k in range(30):
        c.arrived(k * DT + 0.05, k * DT, waited_s=DT)
    t = 30 * DT + 1.2  # a 1.2 s backlog, drained at 5 ms a packet
    k = 30
    while t - 0.05 > k * DT + 0.001:
        c.arrived(t, k * DT, waited_s=0.0001, live_wait_s=DT / 2)
        k, t = k + 1, t + 0.005
    for j in range(k, k + 10):  # caught up: each packet waited for, on time
        t = j * DT + 0.05 + (0.01 if j % 2 else 0.0)
        c.arrived(t, j * DT, waited_s=DT * 0.8, live_wait_s=DT / 2)
        assert c.behind_s(t, j * DT) <= 0.011
    assert c.trusted


def test_a_catching_up_reader_that_finds_packets_waiting_is_still_behind() -> None:
    c = StreamClock()
    for k in range(30):
        c.arrived(k * DT, k * DT, waited_s=DT)
    # Three seconds of stream waited in the network; catching up, each read returns at once.
    t = 30 * DT + 3.0
    for k in range(30, 40):
        c.arrived(t, k * DT, waited_s=0.0005, live_wait_s=DT / 2)
        assert c.behind_s(t, k * DT) > 2.3
        t += 0.001
    # Reads held up now and then (another thread had the interpreter) are not live packets.
    for i in range(LIVE_WAITS - 1):
        c.arrived(t + 0.05 * (i + 1), (40 + i) * DT, waited_s=0.05, live_wait_s=DT / 2)
    c.arrived(t + 0.2, 45 * DT, waited_s=0.001, live_wait_s=DT / 2)
    assert c.behind_s(t + 0.2, 45 * DT) > 2.2 and c.trusted
