"""Duplicates and wrong extensions on real photos (the committed MWD sample)."""
from __future__ import annotations

import shutil

from PIL import Image

from conftest import MWD_SAMPLE
from hvdweather.data.decode import check_image
from hvdweather.data.discovery import discover
from hvdweather.data.fingerprint import (
    find_duplicates,
    inspect_files,
    merge_groups,
    near_duplicate_pairs,
)
from hvdweather.data.images import content_format
from hvdweather.data.split import SUBSETS, duplicate_rows, stratified_split


def _facts(root, perceptual=False):
    catalog = discover(root)
    return catalog, inspect_files(catalog.paths, check_image, threads=2, perceptual=perceptual)


def test_exact_duplicates_and_wrong_extensions_of_the_real_sample():
    catalog, facts = _facts(MWD_SAMPLE)
    found = find_duplicates(facts)
    names = {tuple(p.rsplit("/", 1)[-1] for p in group) for group in found.groups}
    assert names == {("cloudy102.jpg", "cloudy146.jpg"), ("rain142.jpg", "rain24.jpeg")}
    assert [(p.rsplit("/", 1)[-1], fmt) for p, fmt in found.wrong_extension] == [("rain141.jpg", "GIF")]
    assert find_duplicates(facts, exact=False).groups == ()


def test_no_seed_splits_a_duplicate_pair_of_the_real_sample():
    catalog, facts = _facts(MWD_SAMPLE)
    found = find_duplicates(facts)
    for seed in range(30):
        split = stratified_split(catalog, 0.15, 0.15, seed, found.groups)
        rows = duplicate_rows(split, found.groups, found.exact)
        subsets = {}
        for group, kind, _, subset, _ in rows:
            assert kind == "exact"
            subsets.setdefault(group, set()).add(subset)
        assert len(subsets) == 2 and all(len(s) == 1 for s in subsets.values()), seed
        assert sum(split.size(s) for s in SUBSETS) == 44


def test_a_resized_reencoded_copy_is_a_near_duplicate_not_an_exact_one(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(MWD_SAMPLE, root)
    with Image.open(root / "shine" / "shine1.jpg") as image:
        image.convert("RGB").resize((image.width // 2, image.height // 2)).save(
            root / "shine" / "shine1_small.jpg", quality=60)
    catalog, facts = _facts(root, perceptual=True)
    pairs = {(a.rsplit("/", 1)[-1], b.rsplit("/", 1)[-1]) for a, b, _ in
             near_duplicate_pairs(list(facts), [f.phash for f in facts.values()])}
    assert ("shine1.jpg", "shine1_small.jpg") in pairs
    assert len(find_duplicates(facts).groups) == 2  # exact only: the copy is not grouped
    near = find_duplicates(facts, near=True)
    assert any(g[-1].endswith("shine1_small.jpg") for g in near.groups)
    assert tuple(sorted(str(root / "shine" / n) for n in ("shine1.jpg", "shine1_small.jpg"))) not in near.exact


def test_content_format_and_merge_groups():
    assert content_format(b"GIF89a....") == "GIF" and content_format(b"\xff\xd8\xff\xe0") == "JPEG"
    assert content_format(b"RIFF\0\0\0\0WEBPVP8 ") == "WEBP" and content_format(b"hello") == ""
    assert merge_groups([("a", "b"), ("c", "d"), ("b", "c"), ("e", "f")]) == [("a", "b", "c", "d"), ("e", "f")]
