"""What a file is, beyond whether it decodes: its bytes' SHA-256, its real format, a perceptual hash.

Scraped photo sets hold the same image several times (MWD: 19 groups of byte-identical files), and
a split that puts copies on both sides of train/test inflates the test accuracy silently. The
decode check before training reads every file anyway; it hashes the bytes there, and
`duplicate_groups` turns the hashes into the groups the split keeps together.

Near-duplicates (the same photo re-encoded or resized) have different bytes; a perceptual hash
(ImageHash's pHash: the low frequencies of a 32x32 grey DCT, 64 bits) finds them, and
`near_duplicate_pairs` compares every pair by Hamming distance in numpy.

TensorFlow-free: the EDA and training both use it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hvdweather.data.images import FORMAT_OF_EXTENSION, content_format

# pHash bits that may differ for two files to count as the same photo. Measured on MWD's 1,121 files
# (pairs at 0/2/4/6/8/10/12 bits: 73/44/12/5/5/15/25; the 19 byte-identical groups are at 0): pairs
# thin out between 4 and 8 bits. 6 is a starting point, not yet checked pair by pair by eye.
NEAR_DUPLICATE_BITS = 6



@dataclass(frozen=True)
class FileFacts:
    """One file as the check before training saw it."""

    reason: str = ""  # '' when the file decodes, else why not (the file is skipped)
    sha256: str = ""  # of the file's bytes
    real_format: str = ""  # set only when the extension names another format (a GIF named .jpg)
    phash: int | None = None  # 64-bit pHash, when asked for and the file decodes


def inspect_file(path: str, check: Callable[[str], str], perceptual: bool = False) -> FileFacts:
    """Decode-check `path` with `check`, hash its bytes, compare its content with its extension."""
    reason = check(path)
    if reason:
        return FileFacts(reason)
    phash = perceptual_hash(path) if perceptual else None
    data = Path(path).read_bytes()  # one read for the digest and the format
    return FileFacts("", hashlib.sha256(data).hexdigest(), extension_mismatch(path, data[:16]), phash)


def inspect_files(paths: Sequence[str], check: Callable[[str], str], threads: int = 2,
                  perceptual: bool = False) -> dict[str, FileFacts]:
    """`inspect_file` for every path, in `threads` threads (the decoders release the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        facts = list(pool.map(lambda path: inspect_file(path, check, perceptual), paths, chunksize=16))
    return dict(zip(paths, facts))


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of the file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extension_mismatch(path: str | Path, head: bytes) -> str:
    """The real format (from the file's first bytes, `head`) when the extension names another one
    (a GIF named .jpg), else ''."""
    real = content_format(head)
    named = FORMAT_OF_EXTENSION.get(Path(path).suffix.lower(), "")
    return real if real and named and real != named else ""


def perceptual_hash(path: str | Path) -> int:
    """ImageHash's 64-bit pHash of the image's first frame, as an int (raises if it does not decode)."""
    import imagehash  # the EDA and --group-near-duplicates only: a plain training run never loads it

    from hvdweather.data.decode import open_rgb

    with open_rgb(path, image_size=64) as (rgb, _):  # pHash shrinks to 32x32 anyway: decode small
        bits = imagehash.phash(rgb).hash.ravel()
    return int(np.packbits(bits).view(">u8")[0])


def duplicate_groups(paths: Sequence[str], digests: Sequence[str]) -> list[tuple[str, ...]]:
    """Files with equal digests, as groups of two or more paths; groups and their members sorted."""
    by_digest: dict[str, list[str]] = {}
    for path, digest in zip(paths, digests):
        if digest:
            by_digest.setdefault(digest, []).append(path)
    return sorted(tuple(sorted(group)) for group in by_digest.values() if len(group) > 1)


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy 1.26 has no bitwise_count)."""
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)


def near_duplicate_pairs(paths: Sequence[str], hashes: Sequence[int],
                         max_bits: int = NEAR_DUPLICATE_BITS) -> list[tuple[str, str, int]]:
    """Every pair (a, b, bits) whose pHashes differ in at most `max_bits` bits, closest first.

    All pairs are compared, a block of rows at a time (WEAPD's 6.9k files: 24M pairs, a second or two).
    """
    values = np.asarray([h & ((1 << 64) - 1) for h in hashes], dtype=np.uint64)
    pairs: list[tuple[str, str, int]] = []
    for start in range(0, len(values), 512):
        block = values[start:start + 512]
        distance = _popcount(block[:, None] ^ values[None, :])
        rows, cols = np.nonzero(distance <= max_bits)
        for row, col in zip(rows, cols):
            i = start + int(row)
            if i < col:
                pairs.append((paths[i], paths[int(col)], int(distance[row, col])))
    return sorted(pairs, key=lambda pair: (pair[2], pair[0], pair[1]))


def merge_groups(groups: Iterable[Sequence[str]]) -> list[tuple[str, ...]]:
    """Union of overlapping groups (exact groups joined by near-duplicate pairs), each sorted."""
    parent: dict[str, str] = {}

    def root(item: str) -> str:
        while parent.setdefault(item, item) != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for group in groups:
        first, *rest = group
        for other in rest:
            parent[root(other)] = root(first)
    members: dict[str, list[str]] = {}
    for item in parent:
        members.setdefault(root(item), []).append(item)
    return sorted(tuple(sorted(group)) for group in members.values() if len(group) > 1)


@dataclass(frozen=True)
class Duplicates:
    """The groups the split keeps together, and what the run reports about its files."""

    groups: tuple[tuple[str, ...], ...] = ()  # each sorted; exact groups, joined by near pairs if asked
    exact: frozenset[tuple[str, ...]] = frozenset()  # the groups made of byte-identical files only
    wrong_extension: tuple[tuple[str, str], ...] = ()  # (path, real format)


def find_duplicates(facts: dict[str, FileFacts], exact: bool = True, near: bool = False) -> Duplicates:
    """Groups of byte-identical files (`exact`), merged with pHash near-duplicates (`near`), over the
    files that decode."""
    good = sorted(path for path, fact in facts.items() if not fact.reason)
    wrong = tuple((path, facts[path].real_format) for path in good if facts[path].real_format)
    if not (exact or near):
        return Duplicates(wrong_extension=wrong)
    groups = duplicate_groups(good, [facts[path].sha256 for path in good])
    merged = groups
    if near:
        hashed = [path for path in good if facts[path].phash is not None]
        pairs = near_duplicate_pairs(hashed, [facts[path].phash for path in hashed])
        merged = merge_groups([*groups, *((a, b) for a, b, _ in pairs)])
    return Duplicates(tuple(merged), frozenset(groups) & frozenset(merged), wrong)
