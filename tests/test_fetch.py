"""hvdweather-data fetch against archives built from the committed MWD sample, served by a local HTTP server
on 127.0.0.1 (the real hosts are not reachable from CI): layout, checksums, nested archives, and that a
corrupted, truncated or refused download leaves no DEST and no staging folder behind."""
from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import MWD_SAMPLE, run_cli
from hvdweather.data.fetch import fetch
from hvdweather.errors import DataError, OutputError

SAMPLE = sorted(p for p in MWD_SAMPLE.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))


def release_zip(path: Path, corrupt: str = "") -> Path:
    """MWD's release layout: one flat dataset2/ folder; `corrupt`: a file whose bytes are changed."""
    with zipfile.ZipFile(path, "w") as handle:
        for image in SAMPLE:
            data = image.read_bytes()
            handle.writestr(f"dataset2/{image.name}", data[:-1] + b"x" if image.name == corrupt else data)
        handle.writestr("readme.txt", "not an image")
    return path


def manifest(path: Path) -> Path:
    path.write_text("# sha256, size, name\n" + "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}\t{p.stat().st_size}\tdataset2/{p.name}\n" for p in SAMPLE))
    return path


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        truncated = self.path.startswith("/truncated")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncated else body)  # then the connection closes

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 (an ephemeral port) serving /mwd.zip and /truncated.zip."""
    body = release_zip(tmp_path / "served.zip").read_bytes()
    _Handler.files = {"/mwd.zip": body, "/truncated.zip": body}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_lays_out_class_folders_verified_with_checksums_and_attribution(server, tmp_path):
    dest = tmp_path / "sets" / "mwd"
    result = run_cli("hvdweather-data", "fetch", "mwd", str(dest), "--url", f"{server}/mwd.zip",
                     "--manifest", str(manifest(tmp_path / "m.tsv")), timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"all {len(SAMPLE)} files match the release's checksums" in result.stdout
    assert sorted(p.name for p in dest.iterdir()) == ["SHA256SUMS", "SOURCE.md", "cloudy", "rain", "shine", "sunrise"]
    for image in SAMPLE:  # each file in its class folder, byte for byte (the GIF named .jpg too)
        assert (dest / image.parent.name / image.name).read_bytes() == image.read_bytes()
    sums = (dest / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == len(SAMPLE) and "doi:10.17632/4drtyfjtfy.1" in (dest / "SOURCE.md").read_text()
    assert "CC BY 4.0" in (dest / "SOURCE.md").read_text() and leftovers(dest.parent) == []


def test_a_corrupted_file_is_refused_naming_it_and_nothing_is_written(tmp_path):
    archive = release_zip(tmp_path / "bad.zip", corrupt="shine1.jpg")
    with pytest.raises(DataError, match=r"1 differ from the release's checksums \(first: shine1.jpg\)"):
        fetch("mwd", tmp_path / "mwd", archive=str(archive), manifest=str(manifest(tmp_path / "m.tsv")))
    assert not (tmp_path / "mwd").exists() and leftovers(tmp_path) == []
    done = fetch("mwd", tmp_path / "mwd", archive=str(archive), manifest=str(tmp_path / "m.tsv"), verify_files=False)
    assert done.checked == "not verified (--no-verify)" and sum(done.per_class.values()) == len(SAMPLE)


def test_a_truncated_download_leaves_nothing_and_says_what_to_do(server, tmp_path):
    with pytest.raises(DataError, match="failed .*nothing was kept: run the command again, or .* --from FILE"):
        fetch("mwd", tmp_path / "mwd", url=f"{server}/truncated.zip", manifest=str(manifest(tmp_path / "m.tsv")))
    assert not (tmp_path / "mwd").exists() and leftovers(tmp_path) == []
    with pytest.raises(DataError, match="HTTP Error 404"):
        fetch("mwd", tmp_path / "mwd", url=f"{server}/nope.zip")
    assert leftovers(tmp_path) == []


def test_a_nested_tar_inside_a_zip_and_weapd_class_folders(tmp_path):
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as handle:
        for image, folder in zip(SAMPLE[:6], ("dew", "Rime", "snow", "dew", "rime", "snow")):
            handle.add(image, f"dataset/{folder}/{image.name}")
    with zipfile.ZipFile(tmp_path / "dataverse.zip", "w") as handle:
        handle.writestr("dataset.tar.gz", inner.getvalue())
        handle.writestr("MANIFEST.TXT", "files")
    done = fetch("weapd", tmp_path / "weapd", archive=str(tmp_path / "dataverse.zip"))
    assert {k: v for k, v in done.per_class.items() if v} == {"dew": 2, "rime": 2, "snow": 2}
    assert done.checked == "no published checksums to verify against"
    assert len((tmp_path / "weapd" / "SHA256SUMS").read_text().splitlines()) == 6


def test_bad_input_is_refused_in_one_line_before_any_download(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(OutputError, match="already exists and is not an empty folder"):
        fetch("mwd", tmp_path / "full", url="http://127.0.0.1:9/never-contacted.zip")
    with pytest.raises(DataError, match="--from .*: no such file"):
        fetch("mwd", tmp_path / "new", archive=str(tmp_path / "missing.zip"))
    (tmp_path / "plain.zip").write_text("not an archive")
    with pytest.raises(DataError, match="neither a zip nor a tar archive"):
        fetch("mwd", tmp_path / "new", archive=str(tmp_path / "plain.zip"))
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as handle:
        handle.writestr("../outside.jpg", b"x")
    with pytest.raises(DataError, match="outside the folder"):
        fetch("mwd", tmp_path / "new", archive=str(evil))
    assert not (tmp_path / "outside.jpg").exists() and not (tmp_path / "new").exists()
    result = run_cli("hvdweather-data", "fetch", "mwd", str(tmp_path / "full"), timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "DEST" in result.stderr
