"""The tester's commands: `fixtures make|list|sheet`, `replay` and `eval`.

`fixtures make --out ROOT` renders one directory per scenario (`agent.lab.fixtures`): the video,
a valid `config.yaml` and `truth.json`. `fixtures sheet` draws a before/after contact sheet of a
fixture's replay (`agent.lab.contact_sheet`; inputs only ever come from a generated fixture).
`replay` writes exactly what would leave the hub for a recorded source; `eval` scores a replay
against the truth, or the default camera on the shared photos. `eval` refuses a replay made
with another config than the fixture's, and keeps an earlier report unless `--force` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.errors import ExitCode, FixtureError
from agent.lab.evaluate import evaluate, format_report
from agent.lab.fixtures import load_truth, make_fixtures
from agent.lab.replay import run_replay
from agent.lab.scenarios import (
    DEFAULT_FPS,
    DEFAULT_SECONDS,
    DEFAULT_SEED,
    DEFAULT_SIZE,
    SCENARIOS,
    Params,
)
from agent.vocab import Mode


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w_s, h_s = text.lower().split("x")
        w, h = int(w_s), int(h_s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must look like 640x480") from None
    if w < 32 or h < 32 or w > 4096 or h > 4096:
        raise argparse.ArgumentTypeError(f"size {text!r}: each side must be 32..4096 pixels")
    return w, h


def _cmd_make(args: argparse.Namespace) -> int:
    w, h = args.size
    params = Params(w, h, args.seconds, args.fps, args.seed)
    dirs = make_fixtures(Path(args.out), args.scenario, params)
    for d in dirs:
        truth = load_truth(d)
        n_hold = sum(1 for f in truth["per_frame"] if f["must_withhold"])
        n_faces = sum(len(f["faces"]) for f in truth["per_frame"])
        print(f"{d}: {truth['frames']} frames, {n_hold} must be withheld, {n_faces} face boxes")
    return ExitCode.OK


def _cmd_list(args: argparse.Namespace) -> int:
    p = Params(64, 48, 1.0)
    for name, fn in SCENARIOS.items():
        print(f"{name:14} {fn(p).description}")
    return ExitCode.OK


def _register_fixtures(sub: argparse._SubParsersAction) -> None:
    fx = sub.add_parser("fixtures", help="generate test videos with ground truth from the shared photos")
    fsub = fx.add_subparsers(dest="fixtures_command", metavar="SUBCOMMAND", required=True)
    mk = fsub.add_parser("make", help="render scenarios into OUT/<scenario>/ (video, config.yaml, truth.json)")
    mk.add_argument("--out", required=True, help="root directory; each scenario gets a sub-directory")
    mk.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                    help="scenario to render (repeatable; default: all)")
    mk.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="clip length (default %(default)s)")
    mk.add_argument("--fps", type=float, default=DEFAULT_FPS, help="frame rate (default %(default)s)")
    mk.add_argument("--size", type=_parse_size, default=DEFAULT_SIZE, metavar="WxH",
                    help="frame size (default 640x480)")
    mk.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the canary pattern")
    mk.set_defaults(func=_cmd_make)
    ls = fsub.add_parser("list", help="list the scenarios")
    ls.set_defaults(func=_cmd_list)
    sh = fsub.add_parser(
        "sheet", help="draw a before/after contact sheet: fixture input frames beside the replay's output, "
        "each labelled with its decision and reasons",
    )
    sh.add_argument("--fixture", required=True,
                    help="fixture directory (from `fixtures make`); the only allowed source of input frames")
    sh.add_argument("--replay", help="replay output directory of that fixture (default FIXTURE/replay)")
    sh.add_argument("--out", required=True, help="PNG file to write")
    sh.add_argument("--cells", type=int, default=10, metavar="N",
                    help="most input/output pairs on the sheet, one per run of identical decisions "
                    "(default %(default)s)")
    sh.set_defaults(func=_cmd_sheet)


def _cmd_sheet(args: argparse.Namespace) -> int:
    from agent.lab.contact_sheet import write_sheet

    if args.cells < 3:
        raise FixtureError(f"--cells {args.cells}: a sheet needs at least 3 cells")
    fixture_dir = Path(args.fixture)
    replay_dir = Path(args.replay) if args.replay else fixture_dir / "replay"
    _check_same_config(fixture_dir, replay_dir)
    layout = write_sheet(fixture_dir, replay_dir, Path(args.out), max_cells=args.cells)
    kinds = ", ".join(f"{a} x{sum(1 for c in layout.cells if c.action == a)}"
                      for a in ("pass", "mask", "withhold") if a in layout.actions)
    print(f"contact sheet {args.out}: {len(layout.cells)} frames ({kinds}), "
          f"{layout.width_px}x{layout.height_px} px")
    return ExitCode.OK


def _replay_fixture(fixture_dir: Path, replay_dir: Path) -> None:
    from agent.config import load_config
    from agent.lab.replay import run_replay
    from agent.lab.scenarios import CAMERA_ID

    loaded = load_config(fixture_dir / "config.yaml")
    cam = loaded.config.camera(CAMERA_ID)
    source = str(loaded.resolve(cam.source))
    run_replay(source, loaded, CAMERA_ID, replay_dir, progress=sys.stderr.isatty())


def _check_same_config(fixture_dir: Path, replay_dir: Path) -> None:
    """Refuse a replay whose summary.json names another config than the fixture's config.yaml.

    Scoring a replay against the truth of a different scene (or different zones) gives figures
    that look meaningful and are not. A replay without summary.json (written by hand) is let through.
    """
    summary_path = replay_dir / "summary.json"
    if not summary_path.exists():
        return
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FixtureError(f"cannot read {summary_path}: {e}") from None
    made_with = summary.get("config_sha256") if isinstance(summary, dict) else None
    config_path = fixture_dir / "config.yaml"
    expected = load_config(config_path).sha256
    if made_with != expected:
        raise FixtureError(
            f"replay {summary_path} was made with another config (config_sha256 {str(made_with)[:12]}...) "
            f"than the fixture's {config_path} ({expected[:12]}...); replay the fixture with "
            f"--config {config_path} into a fresh --out directory"
        )


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.photos:
        return _cmd_eval_photos(args)
    if not args.fixture:
        raise FixtureError("eval needs --fixture DIR or --photos")
    fixture_dir = Path(args.fixture)
    replay_dir = Path(args.replay) if args.replay else fixture_dir / "replay"
    load_truth(fixture_dir)  # fail early on a directory that is not a fixture
    out = Path(args.out) if args.out else replay_dir / "eval.json"
    if out.exists() and not args.force:
        raise FixtureError(f"report {out} already exists; pass --force to overwrite it or --out to write elsewhere")
    if not (replay_dir / "decisions.jsonl").exists():
        print(f"no replay in {replay_dir}; replaying {fixture_dir / 'config.yaml'} first", file=sys.stderr)
        _replay_fixture(fixture_dir, replay_dir)
    _check_same_config(fixture_dir, replay_dir)
    rep = evaluate(fixture_dir, replay_dir)
    doc = rep.to_json()
    comparison = None
    if args.deface is not None:
        comparison = _compare_deface_video(fixture_dir, replay_dir, args)
        doc["face_recall_pixel_rule"] = {r.tool: r.to_json() for r in comparison}
    try:
        out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise FixtureError(f"cannot write report {out}: {e.strerror or e}") from e
    print(format_report(rep))
    if comparison is not None:
        from agent.lab.video_recall import format_video_comparison

        print(format_video_comparison(comparison, rep.scenario))
    print(f"  report: {out}")
    return ExitCode.OK if rep.ok else ExitCode.FAILED


def _deface_bin(args: argparse.Namespace) -> Path:
    from agent.lab.deface import check_deface, default_deface_bin

    return check_deface(Path(args.deface) if args.deface else default_deface_bin())


def _compare_deface_video(fixture_dir: Path, replay_dir: Path, args: argparse.Namespace) -> list[Any]:
    from agent.lab.scoring import work_dir
    from agent.lab.video_recall import video_face_recall_deface, video_face_recall_ours

    binary = _deface_bin(args)
    ours = video_face_recall_ours(fixture_dir, replay_dir)
    with work_dir(Path(args.work) if args.work else None) as work:
        print(f"running deface on {fixture_dir} ...", file=sys.stderr)
        theirs = video_face_recall_deface(fixture_dir, binary, work)
    return [ours, theirs]


def _cmd_eval_photos(args: argparse.Namespace) -> int:
    from agent.lab.photos import evaluate_photos, format_photo_report
    from agent.lab.scoring import work_dir, write_json

    if args.fixture or args.replay:
        raise FixtureError("--photos cannot be combined with --fixture/--replay")
    binary = _deface_bin(args) if args.deface is not None else None
    with work_dir(Path(args.work) if args.work else None) as work:
        rep = evaluate_photos(work, names=args.photo or None, deface_bin=binary)
    print(format_photo_report(rep))
    if args.out:
        write_json(Path(args.out), rep.to_json())
        print(f"  report: {args.out}")
    return ExitCode.OK if rep.ok else ExitCode.FAILED


def _register_eval(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval", help="measure privacy and quality against ground truth (a fixture replay, or the shared photos)"
    )
    what = ev.add_mutually_exclusive_group(required=True)
    what.add_argument("--fixture", help="fixture directory (from `fixtures make`)")
    what.add_argument("--photos", action="store_true",
                      help="run each shared photo through the pipeline and report face recall, private-object "
                      "recall and the false-withhold rate against agent/lab/data/photos_truth.json")
    ev.add_argument("--replay", help="replay output directory (default FIXTURE/replay; replayed if empty)")
    ev.add_argument("--photo", action="append", metavar="NAME",
                    help="with --photos: only this photo (repeatable; default all)")
    ev.add_argument("--deface", nargs="?", const="", metavar="BIN",
                    help="also measure the deface CLI (default settings) the same way; BIN defaults to "
                    "$EPA_DEFACE or .cache/deface-venv/bin/deface")
    ev.add_argument("--work", help="keep intermediate outputs (inputs, deface outputs) in this directory")
    ev.add_argument("--out", help="report JSON path (default REPLAY/eval.json; --photos: not saved unless given)")
    ev.add_argument("--force", action="store_true",
                    help="overwrite an existing report (with --fixture an earlier report is kept by default)")
    ev.set_defaults(func=_cmd_eval)

def cmd_replay(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    cam_id = args.camera or loaded.config.cameras[0].id
    mode = Mode(args.mode) if args.mode else None
    summary = run_replay(args.source, loaded, cam_id, Path(args.out), progress=not args.quiet, mode=mode)
    print(
        f"replayed {summary['frames_in']} frames at {summary['fps']} fps: "
        f"{summary['passed']} passed, {summary['masked']} masked, {summary['withheld']} withheld "
        f"-> {args.out}/redacted.mp4 ({summary['frames_out']} frames)"
    )
    if summary["withhold_reasons"]:
        print("  withheld because: " + ", ".join(f"{k} x{v}" for k, v in summary["withhold_reasons"].items()))
    for zone, n in summary["busy_withhold_zones"].items():
        print(f"warning: withhold zone {zone!r} withheld {n} of {summary['frames_in']} frames; it may be drawn "
              "over a busy area (a doorway, a walkway): make it smaller or a mask zone", file=sys.stderr)
    return ExitCode.OK


def _register_replay(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("replay", help="run a recorded source through a camera's privacy pipeline")
    r.add_argument("source", help="video file or image glob (quote the glob)")
    r.add_argument("--config", required=True, help="config file whose camera zones and policy apply")
    r.add_argument("--camera", help="camera id whose zones and policy apply (default: the first)")
    r.add_argument("--out", required=True,
                   help="output directory for redacted.mp4, decisions.jsonl, summary.json and events.jsonl "
                   "(created; removed again if the replay fails)")
    r.add_argument("--mode", choices=[m.value for m in Mode], help="household mode (default: the config's)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_replay)


def register_cli(sub: argparse._SubParsersAction) -> None:
    _register_fixtures(sub)
    _register_replay(sub)
    _register_eval(sub)
