"""hvdweather-data fetch: the public real-photo sets, downloaded (or taken from an archive already on disk),
checked and laid out as class folders.

    hvdweather-data fetch mwd data/mwd                     # Mendeley Data, doi:10.17632/4drtyfjtfy.1
    hvdweather-data fetch weapd data/weapd --from ~/dataset.zip   # a cluster without internet

Order of work: DEST and the archive are checked -> everything happens in a staging folder beside DEST
(`.DEST.partial-PID`; one left by a killed fetch is removed by the next) -> the download lands there as
a `.part` file, renamed when complete -> the archive, and any archive inside it, is unpacked -> every
image is filed under its class -> checksums are verified (MWD: every file of the release against a
manifest packaged here; WEAPD publishes none, so its archive's SHA-256 is printed and recorded) ->
DEST/SHA256SUMS and DEST/SOURCE.md are written -> the staging folder is renamed to DEST. Whatever
fails, DEST is never left half-written, and the staging folder is removed.
"""
from __future__ import annotations

import os
import re
import shutil
import tarfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hvdweather.data.fingerprint import file_sha256
from hvdweather.data.images import IMAGE_EXTENSIONS
from hvdweather.errors import DataError, OutputError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MANIFESTS = Path(__file__).parent / "manifests"
WEAPD_CLASSES = ("dew", "fogsmog", "frost", "glaze", "hail", "lightning", "rain", "rainbow", "rime", "sandstorm",
                 "snow")


@dataclass(frozen=True)
class PublicSet:
    """Where a set comes from and how its files find their class."""

    name: str
    url: str  # the release's archive (not reachable from the machines this was built on: see the README)
    citation: str
    classes: tuple[str, ...]
    class_of: Callable[[Path], str | None]  # an extracted file -> its class, None when it is no image of the set
    manifest: str  # packaged TSV (sha256, size, name) of the release's files; "" = none published


def _mwd_class(path: Path) -> str | None:
    """MWD's release is one flat folder; the class is the file name's prefix (cloudy12.jpg)."""
    match = re.fullmatch(r"(cloudy|rain|shine|sunrise)\d+\.\w+", path.name.lower())
    return match.group(1) if match and path.suffix.lower() in IMAGE_EXTENSIONS else None


def _weapd_class(path: Path) -> str | None:
    """WEAPD's release has a folder per class: the nearest enclosing folder named after one."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return None
    return next((p.lower() for p in reversed(path.parent.parts) if p.lower() in WEAPD_CLASSES), None)


SETS = {
    "mwd": PublicSet("mwd", "https://prod-dcd-datasets-cache-zipfiles.s3.eu-west-1.amazonaws.com/4drtyfjtfy-1.zip",
                     'Ajayi, Gbeminiyi (2018). "Multi-class Weather Dataset for Image Classification". Mendeley '
                     "Data, V1, doi:10.17632/4drtyfjtfy.1. Licence: CC BY 4.0.",
                     ("cloudy", "rain", "shine", "sunrise"), _mwd_class, "mwd.tsv"),
    "weapd": PublicSet("weapd", "https://dataverse.harvard.edu/api/access/dataset/:persistentId/"
                       "?persistentId=doi:10.7910/DVN/M8JQCR",
                       "Weather Phenomenon Database (WEAPD), Harvard Dataverse, doi:10.7910/DVN/M8JQCR. Cite it as its "
                       "Dataverse page says, under the licence terms stated there.",
                       WEAPD_CLASSES, _weapd_class, ""),
}


@dataclass(frozen=True)
class Fetched:
    dest: Path
    per_class: dict[str, int]
    archive_sha256: str
    checked: str  # what was verified, in words


def read_manifest(path: Path) -> dict[str, str]:
    """file name -> sha256 from a TSV of sha256, size, name (lines starting with # are comments)."""
    manifest = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            sha, _size, name = line.split("\t")
            manifest[Path(name).name] = sha
    return manifest


def check_dest(dest: Path) -> None:
    """DEST must be new or an empty folder, in a folder we can write."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise OutputError(f"DEST {dest}: already exists and is not an empty folder; pass a new folder "
                          "(or remove this one)")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        probe = dest.parent / f".{dest.name}.write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"DEST {dest}: its folder is not writable ({exc.strerror or exc}); choose another") from None
    for stale in dest.parent.glob(f".{dest.name}.partial-*"):  # a killed fetch's; its process is gone
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)


def download(url: str, target: Path, timeout_s: float = 60.0) -> Path:
    """`url` into `target`, through `target`.part renamed when complete; a failure removes the part."""
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(part, "wb") as handle:
            expected = int(response.headers.get("Content-Length") or -1)
            shutil.copyfileobj(response, handle, 1 << 20)
        got = part.stat().st_size
        if expected >= 0 and got != expected:
            raise OSError(f"got {got} of {expected} bytes")
    except (OSError, ValueError) as exc:  # URLError, HTTPError, IncompleteRead, timeouts are OSErrors
        part.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed ({exc}); nothing was kept: run the command again, or "
                        "download the file another way and pass it with --from FILE") from None
    os.replace(part, target)
    return target


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _inside(root: Path, name: str) -> Path:
    """Where archive member `name` lands; refuses members that would land outside `root`."""
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise DataError(f"archive member {name!r} would be written outside the folder; the archive is not a "
                        "data set release: download it again")
    return target


def unpack(archive: Path, into: Path) -> None:
    """Unpack a zip or tar archive (members checked to stay inside `into`), then any archive inside it."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                for member in handle.infolist():
                    _inside(into, member.filename)
                handle.extractall(into)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as handle:
                members = [m for m in handle.getmembers() if m.isfile() or m.isdir()]  # no links, no devices
                for member in members:
                    _inside(into, member.name)
                handle.extractall(into, members)
        else:
            raise DataError(f"{archive}: neither a zip nor a tar archive; pass the release's archive "
                            "(or download it again)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: a damaged archive ({exc}); delete it and download it again") from None
    for inner in sorted(p for p in into.rglob("*") if p.is_file() and _is_archive(p)):
        folder = inner.with_name(inner.name + ".unpacked")
        folder.mkdir()
        unpack(inner, folder)
        inner.unlink()


def lay_out(extracted: Path, staging: Path, spec: PublicSet) -> dict[str, int]:
    """Move every image of the set into staging/<class>/; files of no class (readmes, __MACOSX) stay out."""
    counts = {name: 0 for name in spec.classes}
    for path in sorted(p for p in extracted.rglob("*") if p.is_file()):
        name = spec.class_of(path.relative_to(extracted))
        if name is None or "__MACOSX" in path.parts or path.name.startswith("._"):
            continue
        target = staging / name / path.name
        if target.exists():  # two folders of the release with one file name: keep both
            target = target.with_name(f"{path.parent.name}_{path.name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        counts[name] += 1
    if not any(counts.values()):
        raise DataError(f"no {spec.name.upper()} image in the archive (expected {', '.join(spec.classes[:4])}...); "
                        "is it the right file? Download it again or pass the release's archive")
    return counts


def digests(staging: Path) -> dict[Path, str]:
    """SHA-256 of every laid-out file, read once for both the check and SHA256SUMS."""
    return {p: file_sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}


def verify(files: dict[Path, str], manifest: dict[str, str]) -> int:
    """Every file of the manifest present with its checksum, and nothing else; the files checked."""
    found = {p.name: sha for p, sha in files.items()}
    missing = sorted(set(manifest) - set(found))
    wrong = sorted(name for name in set(manifest) & set(found) if found[name] != manifest[name])
    extra = sorted(set(found) - set(manifest))
    if missing or wrong or extra:
        parts = [f"{len(items)} {what} (first: {items[0]})" for items, what in
                 ((wrong, "differ from the release's checksums"), (missing, "missing"), (extra, "not in the release"))
                 if items]
        raise DataError(f"the archive does not match the release: {'; '.join(parts)}; nothing was written: "
                        "delete the archive and download it again")
    return len(manifest)


def write_records(staging: Path, files: dict[Path, str], spec: PublicSet, source: str, archive_sha256: str) -> None:
    """DEST/SHA256SUMS (sha256sum -c) and DEST/SOURCE.md (the attribution travels with the data)."""
    (staging / "SHA256SUMS").write_text("".join(f"{sha}  {p.relative_to(staging)}\n" for p, sha in files.items()))
    (staging / "SOURCE.md").write_text(
        f"# {spec.name.upper()}\n\n{spec.citation}\n\nKeep this attribution wherever these images, or images derived "
        f"from them, are stored.\n\nFetched by hvdweather-data fetch on {time.strftime('%Y-%m-%d')} from {source} "
        f"(SHA-256 {archive_sha256}); {len(files)} image(s) in class folders; SHA256SUMS lists each file.\n")


def fetch(name: str, dest: str | Path, archive: str = "", url: str = "", manifest: str = "",
          verify_files: bool = True) -> Fetched:
    """The whole command; raises DataError/OutputError (one line) before or instead of a partial DEST."""
    spec, dest = SETS[name], Path(dest)
    check_dest(dest)
    if archive and not Path(archive).is_file():
        raise DataError(f"--from {archive}: no such file; pass the archive you downloaded")
    manifest_path = Path(manifest) if manifest else (MANIFESTS / spec.manifest if spec.manifest else None)
    if manifest_path is not None and not manifest_path.is_file():
        raise DataError(f"--manifest {manifest_path}: no such file; pass a TSV of sha256, size, name")
    staging = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        staging.mkdir()
        source = archive or url or spec.url
        local = Path(archive) if archive else download(source, staging / "download")
        archive_sha256 = file_sha256(local)
        unpack(local, staging / "extracted")
        counts = lay_out(staging / "extracted", staging / "set", spec)
        files = digests(staging / "set")
        checked = ("no published checksums to verify against" if manifest_path is None else
                   "not verified (--no-verify)" if not verify_files else
                   f"all {verify(files, read_manifest(manifest_path))} files match the release's checksums")
        write_records(staging / "set", files, spec, source, archive_sha256)
        if dest.exists():
            dest.rmdir()  # the empty folder check_dest allowed
        os.replace(staging / "set", dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Fetched(dest, counts, archive_sha256, checked)
