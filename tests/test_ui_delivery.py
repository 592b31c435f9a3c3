"""The steps after a job, one place for the Restore and Batch pages: report, stems zip, copy."""

from __future__ import annotations

import json
import zipfile

from resonate.ui.delivery import deliver
from resonate.ui.session import Prefs


def test_deliver_writes_the_report_zips_the_stems_and_copies_the_master(tmp_path):
    job, out = tmp_path / "job", tmp_path / "masters"
    (job / "stems").mkdir(parents=True)
    dst = job / "take_restored.wav"
    dst.write_bytes(b"master")
    for stem in ("vocals", "drums"):
        (job / "stems" / f"take-{stem}.wav").write_bytes(stem.encode())
    done = deliver(dst, {"seconds": 1.0}, Prefs(output_dir=str(out)), report_path=job / "report.json",
                   stems_dir=job / "stems")
    assert json.loads((job / "report.json").read_text()) == {"seconds": 1.0}
    assert [p.name for p in done.stems] == ["take-drums.wav", "take-vocals.wav"]
    assert zipfile.ZipFile(done.stems_zip).namelist() == ["take-drums.wav", "take-vocals.wav"]
    assert done.saved_copy == out / dst.name and done.saved_copy.read_bytes() == b"master"
    assert done.copy_error is None


def test_without_an_output_folder_or_stems_only_what_was_asked(tmp_path):
    dst = tmp_path / "take_restored.wav"
    dst.write_bytes(b"master")
    done = deliver(dst, {}, Prefs(output_dir=""))
    assert (done.report, done.stems, done.stems_zip, done.saved_copy, done.copy_error) == (None, [], None, None, None)
    assert [p.name for p in tmp_path.iterdir()] == ["take_restored.wav"]


def test_a_failed_copy_is_returned_not_raised(tmp_path):
    dst = tmp_path / "take_restored.wav"
    dst.write_bytes(b"master")
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    done = deliver(dst, {}, Prefs(output_dir=str(blocked / "masters")))
    assert done.saved_copy is None and done.copy_error.startswith(f"not copied to the default output folder {blocked}")
