"""What a job may write and what it leaves behind, through the real CLI in a subprocess: inputs are
never overwritten, folders that cannot take the files are refused before the work, write
failures are one error line, and killed jobs' temporary files are found and removed later."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import tone_mix
from tests.test_cli import SKIP_MODELS, assert_clean_error, run_cli, run_patched_cli


def _wav(path: Path, seconds: float = 1.0, sr: int = 22050, channels: int = 1) -> Path:
    sf.write(str(path), tone_mix(seconds, sr, channels).T, sr)
    return path


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def job_tmp(tmp_path):
    """A $TMPDIR of the test's own, so the spool this job makes (or leaves) can be seen."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    return folder


# --- no output may be an input ---------------------------------------------------------------


def test_report_pointed_at_the_input_is_refused(tmp_path):
    src = _wav(tmp_path / "a.wav")
    before = src.read_bytes()
    proc = run_cli("restore", src, "-o", tmp_path / "o.wav", *SKIP_MODELS, "--report", src)
    assert_clean_error(proc, "would overwrite the input")
    assert src.read_bytes() == before
    assert _tree(tmp_path) == ["a.wav"]


def test_batch_output_named_like_another_input_is_refused(tmp_path):
    # a.wav -> a_restored.wav, which is the second input: it would be replaced before it is read.
    a, other = _wav(tmp_path / "a.wav"), _wav(tmp_path / "a_restored.wav", seconds=2.0)
    before = other.read_bytes()
    proc = run_cli("restore", a, other, "-o", tmp_path, *SKIP_MODELS)
    assert_clean_error(proc, "would overwrite the input")
    assert other.read_bytes() == before
    assert _tree(tmp_path) == ["a.wav", "a_restored.wav"]
    # Through a symbolic link to the folder too (same files, other names).
    (tmp_path.parent / "link").symlink_to(tmp_path, target_is_directory=True)
    proc = run_cli("restore", a, other, "-o", tmp_path.parent / "link", *SKIP_MODELS)
    assert_clean_error(proc, "would overwrite the input")
    assert other.read_bytes() == before


def test_stems_named_like_an_input_are_refused(tmp_path):
    # In a batch, a.wav's stems are written as STEMS/a/a-SOURCE.wav: its vocals would replace the
    # second input before it is read.
    (tmp_path / "stems" / "a").mkdir(parents=True)
    a, stem_like = _wav(tmp_path / "a.wav"), _wav(tmp_path / "stems" / "a" / "a-vocals.wav")
    before = stem_like.read_bytes()
    proc = run_cli("restore", a, stem_like, "-o", tmp_path / "out", "--stems", tmp_path / "stems", "--skip", "restore")
    assert_clean_error(proc, "would overwrite the input")
    assert stem_like.read_bytes() == before and not (tmp_path / "out").exists()


# --- killed jobs ----------------------------------------------------------------------------

# Pauses the job once its pass-1 spool holds a block ("spool"), or once the output is being
# written ("output"), and says so through a marker file: the test then knows exactly what
# exists when it sends its signal.
PAUSE = """
import os, time
import resonate.pipeline as pipeline
from resonate.streams import WriteBehind

def pause():
    open(os.environ["PAUSE_MARKER"], "w").close()
    time.sleep(600)

if os.environ["PAUSE_IN"] == "spool":
    real_spool = pipeline._write_spool_block
    def _write_spool_block(f, block):
        real_spool(f, block)
        pause()
    pipeline._write_spool_block = _write_spool_block
else:
    real_put = WriteBehind.put
    def put(self, block):
        real_put(self, block)
        pause()
    WriteBehind.put = put
"""


def _start_paused_job(tmp_path: Path, job_tmp: Path, pause_in: str) -> tuple[subprocess.Popen, Path]:
    src = _wav(tmp_path / "a.wav", seconds=3.0, sr=44100, channels=2)
    marker = tmp_path / "paused"
    out = tmp_path / "out"
    proc = run_patched_cli(PAUSE, "restore", src, "-o", out / "a.wav", *SKIP_MODELS, popen=True,
                           env={"TMPDIR": str(job_tmp), "PAUSE_IN": pause_in, "PAUSE_MARKER": str(marker)})
    deadline = time.monotonic() + 240     # a safeguard against hanging, not a measurement
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the job did not reach its pause: {proc.communicate()[1]}")
        time.sleep(0.05)
    return proc, out


@pytest.mark.parametrize("pause_in", ["spool", "output"])
def test_sigterm_cleans_up_like_ctrl_c(tmp_path, job_tmp, pause_in):
    proc, out = _start_paused_job(tmp_path, job_tmp, pause_in)
    assert [p.name.split("-")[2] for p in job_tmp.iterdir()] == [str(proc.pid)]   # the spool, named with its PID
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: terminated") and "Traceback" not in stderr
    assert _tree(job_tmp) == []
    assert not out.exists() or _tree(out) == []


def test_leftovers_of_a_killed_job_are_removed_by_the_next_one(tmp_path, job_tmp):
    proc, out = _start_paused_job(tmp_path, job_tmp, "output")
    proc.kill()
    proc.communicate(timeout=120)
    pid = proc.pid
    spools = [p.name for p in job_tmp.iterdir()]
    partials = [p.name for p in out.iterdir()]
    assert [s.startswith(f"resonate-spool-{pid}-") for s in spools] == [True]
    assert [s.startswith(f".resonate-part-{pid}-") for s in partials] == [True]
    # Beside them: a job still running (this test's own PID), one of another machine sharing the
    # folder (its PIDs mean nothing here), and names Resonate did not make.
    here = spools[0].split("-")[3]
    elsewhere = "0123abcd" if here != "0123abcd" else "4567abcd"
    planted = [f"resonate-spool-{os.getpid()}-{here}-abcdefgh", f"resonate-spool-{pid}-{elsewhere}-abcdefgh",
               f"resonate-spool-{pid}-notours"]
    for name in planted:
        (job_tmp / name).mkdir()
    (job_tmp / f"resonate-spool-{pid}-{here}-abcdefgi").write_text("a file, not a folder of ours")
    (out / "resonate-notes").mkdir()

    src = _wav(tmp_path / "b.wav")
    rerun = run_cli("restore", src, "-o", out / "b.wav", *SKIP_MODELS, env={"TMPDIR": str(job_tmp)})
    assert rerun.returncode == 0, rerun.stderr
    lines = [ln for ln in rerun.stderr.splitlines() if "killed Resonate jobs" in ln]
    assert len(lines) == 1 and spools[0] in lines[0] and partials[0] in lines[0], rerun.stderr
    assert sorted(p.name for p in job_tmp.iterdir()) == sorted([*planted, f"resonate-spool-{pid}-{here}-abcdefgi"])
    assert sorted(p.name for p in out.iterdir()) == ["b.wav", "resonate-notes"]


# --- where the files go ---------------------------------------------------------------------


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can create files in, root included (chmod, or the immutable flag as root)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0 \
            if shutil.which("chattr") else False
        if not immutable:
            folder.chmod(0o755)
            pytest.skip("cannot make a folder read-only for this user here")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


@pytest.mark.parametrize("where", ["output", "report", "stems", "output under a file"])
def test_unwritable_folders_are_refused_before_the_work(tmp_path, job_tmp, read_only_folder, where):
    src = _wav(tmp_path / "a.wav")
    out = tmp_path / "o.wav"
    args = ["restore", src, "-o", out, "--skip", "restore"]
    if where == "output":
        args[3] = read_only_folder / "o.wav"
    elif where == "report":
        args += ["--report", read_only_folder / "r.json"]
    elif where == "stems":
        args += ["--stems", read_only_folder / "stems"]
    else:
        args[3] = src / "o.wav"
    proc = run_cli(*args, env={"TMPDIR": str(job_tmp)})
    assert_clean_error(proc, "is a file, not a folder" if where == "output under a file" else "not writable")
    assert _tree(job_tmp) == [] and not out.exists()   # no spool: refused before the first pass


SMALL_DISK = """
import shutil
real_disk_usage = shutil.disk_usage
def disk_usage(path):
    return real_disk_usage(path)._replace(free=300_000)
shutil.disk_usage = disk_usage
"""


def test_no_room_for_the_output_is_refused_before_the_work(tmp_path, job_tmp):
    # 5 s of 24-bit stereo at 44.1 kHz is 1.3 MB; the "disk" has 0.3 MB free.
    src = _wav(tmp_path / "a.wav", seconds=5.0, sr=44100, channels=2)
    out = tmp_path / "o.wav"
    proc = run_patched_cli(SMALL_DISK, "restore", src, "-o", out, *SKIP_MODELS, env={"TMPDIR": str(job_tmp)})
    assert_clean_error(proc, "not enough free space")
    assert _tree(job_tmp) == [] and not out.exists()


def _file_size_limit(limit: int):
    # Writes past `limit` bytes fail with EFBIG, as writes to a full disk fail with ENOSPC
    # (Python ignores SIGXFSZ, so the process is not killed by it).
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


# Without any two-pass stage nothing is spooled, so the output is the first big write.
@pytest.mark.parametrize("skip,what", [(("match", "extend", "loudness"), "output"), ((), "temporary spool file")])
def test_a_write_failing_midway_is_one_error_line(tmp_path, job_tmp, skip, what):
    src = _wav(tmp_path / "a.wav", seconds=10.0, sr=44100, channels=2)    # 2.6 MB out, 3.5 MB of spool
    out = tmp_path / "out" / "o.wav"
    rep = tmp_path / "r.json"
    proc = run_cli("restore", src, "-o", out, *SKIP_MODELS, *skip, "--report", rep, env={"TMPDIR": str(job_tmp)},
                   preexec_fn=_file_size_limit(1_000_000))
    assert_clean_error(proc, f"cannot write the {what}")
    assert "File too large" in proc.stderr
    assert _tree(job_tmp) == [] and _tree(tmp_path / "out") == []
    assert "File too large" in json.loads(rep.read_text())["error"]
