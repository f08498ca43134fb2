"""deploy/: the hardened systemd unit, its sysusers and tmpfiles snippets.

- `systemd-analyze security --offline=yes` scores the unit at 2.0 or less (a bare unit scores 9.6);
- `systemd-analyze verify` accepts it, in a scratch root that holds systemd's own units and a
  stand-in for the venv's `privacy-agent` (verify checks that ExecStart's binary exists);
- `systemd-sysusers` and `systemd-tmpfiles` really create the user, the group memberships and the
  directories (0700 data dir, 0750 config dir) in a scratch root;
- the agent really runs, detection, encoding and sealing included, with W+X memory refused by
  the kernel (PR_SET_MDWE, what the unit's MemoryDenyWriteExecute= enforces with seccomp).

`systemd-analyze`, `systemd-sysusers` and `systemd-tmpfiles` come from Debian's `systemd`
package (scripts/bootstrap installs it); none of them needs a running systemd here.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_support import model_cache
from videokit import walker_frames, write_video

from agent.cli.main import main

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "privacy-agent.service"
MAX_EXPOSURE = 2.0
EXEC = "/opt/privacy-agent/venv/bin/privacy-agent"


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/bin")
    assert path, f"{name} is missing: scripts/bootstrap installs Debian's systemd package"
    return path


def test_security_exposure_is_at_most_2() -> None:
    proc = subprocess.run([_tool("systemd-analyze"), "security", "--offline=yes", str(UNIT)],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for privacy-agent\.service: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr
    score = float(m.group(1))
    print(f"systemd-analyze security: exposure {score}")
    assert score <= MAX_EXPOSURE, proc.stdout


def test_unit_verifies(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/privacy-agent.service")
    exe = root / EXEC.lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    proc = subprocess.run([_tool("systemd-analyze"), "verify", f"--root={root}", "privacy-agent.service"],
                          capture_output=True, text=True, timeout=60)
    # verify exits 0 even for an unknown key or a bad value; it says so on stderr.
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_unit_settings_and_their_reasons() -> None:
    text = UNIT.read_text()
    lines = text.splitlines()
    settings = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z]\w+=", line))
    assert settings["ExecStart"] == f"{EXEC} run --config /etc/privacy-agent/config.yaml"
    assert (settings["Type"], settings["NotifyAccess"], settings["Restart"]) == ("notify", "main", "on-failure")
    assert (settings["User"], settings["Group"], settings["UMask"]) == ("privacy-agent", "privacy-agent", "0077")
    assert settings["ReadWritePaths"] == "/var/lib/privacy-agent"
    assert settings["CapabilityBoundingSet"] == "" and settings["AmbientCapabilities"] == ""
    assert settings["DevicePolicy"] == "closed" and "PrivateDevices" not in settings
    assert re.findall(r"^DeviceAllow=(.*)$", text, re.M) == ["char-video4linux rw", "char-gpiochip rw"]
    assert settings["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert "EPA_MODEL_CACHE=/opt/privacy-agent/models" in settings["Environment"]
    # Every setting of the service says why: each run of settings follows a comment line.
    start, end = lines.index("[Service]"), lines.index("[Install]")
    for i, line in enumerate(lines[start:end], start):
        if re.match(r"^[A-Z]\w+=", line):
            j = i
            while j > 0 and re.match(r"^[A-Z]\w+=", lines[j - 1]):
                j -= 1
            assert j > 0 and lines[j - 1].startswith("#"), f"no comment says why: {line}"


def test_sysusers_and_tmpfiles_create_the_user_and_private_dirs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for kind, src in (("sysusers.d", "privacy-agent.sysusers"), ("tmpfiles.d", "privacy-agent.tmpfiles")):
        (root / "usr/lib" / kind).mkdir(parents=True)
        shutil.copy(DEPLOY / src, root / "usr/lib" / kind / "privacy-agent.conf")
    users = subprocess.run([_tool("systemd-sysusers"), f"--root={root}"], capture_output=True, text=True, timeout=60)
    assert users.returncode == 0, users.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    group = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    user = passwd["privacy-agent"]
    assert user[5] == "/var/lib/privacy-agent" and user[6] == "/usr/sbin/nologin" and int(user[2]) < 1000
    assert user[3] == group["privacy-agent"][2]
    assert "privacy-agent" in group["video"][3].split(",") and "privacy-agent" in group["gpio"][3].split(",")

    dirs = subprocess.run([_tool("systemd-tmpfiles"), f"--root={root}", "--create"], capture_output=True, text=True,
                          timeout=60)
    assert dirs.returncode == 0, dirs.stderr
    data, etc = os.stat(root / "var/lib/privacy-agent"), os.stat(root / "etc/privacy-agent")
    assert stat.S_IMODE(data.st_mode) == 0o700 and stat.S_IMODE(etc.st_mode) == 0o750
    uid, gid = int(user[2]), int(user[3])
    assert (data.st_uid, data.st_gid) == (uid, gid)
    assert (etc.st_uid, etc.st_gid) == (0, gid)


#: Refuse W+X mappings and making a mapping executable: prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN),
#: kept across fork and execve (Linux 6.3+). Checked, then the agent is exec'd under it.
_MDWE = """\
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(f"PR_SET_MDWE failed (errno {ctypes.get_errno()}): this kernel cannot refuse W+X memory")
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
addr = libc.mmap(None, 4096, 7, 0x22, -1, 0)  # PROT_READ|WRITE|EXEC, MAP_PRIVATE|ANONYMOUS
if addr not in (None, ctypes.c_void_p(-1).value):
    sys.exit("a W+X mapping was allowed: MDWE is not in force")
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_agent_runs_without_writable_executable_memory(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the unit can say MemoryDenyWriteExecute=yes: ONNX Runtime, numpy, OpenCV, PyAV and PyNaCl
    need no W+X page (no JIT); a run with detection, encoding and sealing works with them refused."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    assert main(["keys", "init", "--data", str(data)]) == 0
    assert main(["owner", "keygen", "--out", str(tmp_path / "owner.key")]) == 0
    write_video(tmp_path / "v.mp4", walker_frames(20))
    (tmp_path / "clips").mkdir()
    assert main(["sink", "init", str(tmp_path / "clips")]) == 0
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""\
data_dir: {data}
recipients: [{tmp_path / 'owner.key.pub'}]
cameras:
  - id: porch
    source: v.mp4
sinks:
  - type: directory
    path: clips
    segment_s: 10
""")
    env = dict(os.environ, EPA_MODEL_CACHE=str(model_cache(tmp_path_factory)))
    agent = str(Path(sys.executable).parent / "privacy-agent")
    proc = subprocess.run([sys.executable, "-c", _MDWE, agent, "run", "--config", str(cfg)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "porch: 20 frames in" in proc.stdout
    assert list((tmp_path / "clips").rglob("*.epaclip")), "no clip was sealed"
