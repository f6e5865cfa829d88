"""The stratified split: seeded, disjoint, per-class proportions, round-trips through split.csv."""
from __future__ import annotations

import pytest

from hvdweather.data.discovery import Catalog, DataError
from hvdweather.data.split import SUBSETS, read_split, stratified_split, write_split


def _catalog(counts: dict[str, int]) -> Catalog:
    names = tuple(counts)
    paths, labels = [], []
    for label, name in enumerate(names):
        for i in range(counts[name]):
            paths.append(f"/d/{name}/{i}.jpg")
            labels.append(label)
    return Catalog("/d", names, tuple(paths), tuple(labels))


def test_same_seed_same_split_other_seed_differs():
    catalog = _catalog({"a": 40, "b": 25, "c": 10})
    one, two = (stratified_split(catalog, 0.2, 0.1, seed=3) for _ in range(2))
    assert one.paths == two.paths
    assert stratified_split(catalog, 0.2, 0.1, seed=4).paths != one.paths


def test_disjoint_complete_and_stratified():
    catalog = _catalog({"a": 40, "b": 20})
    split = stratified_split(catalog, 0.25, 0.1, seed=0)
    all_paths = [p for s in SUBSETS for p in split.paths[s]]
    assert sorted(all_paths) == sorted(catalog.paths)
    val_a = sum(1 for y in split.labels["val"] if y == 0)
    val_b = sum(1 for y in split.labels["val"] if y == 1)
    assert (val_a, val_b) == (10, 5)
    assert split.size("test") == 4 + 2


def test_every_class_in_every_requested_subset():
    split = stratified_split(_catalog({"a": 3, "b": 50}), 0.1, 0.1, seed=0)
    for subset in SUBSETS:
        assert set(split.labels[subset]) == {0, 1}


def test_too_few_images_names_the_class():
    with pytest.raises(DataError, match="class 'b' has 2 usable"):
        stratified_split(_catalog({"a": 30, "b": 2}), 0.2, 0.2, seed=0)


def test_no_val_no_test_is_allowed():
    split = stratified_split(_catalog({"a": 2, "b": 2}), 0.0, 0.0, seed=0)
    assert split.size("train") == 4 and split.size("val") == split.size("test") == 0


def test_csv_round_trip(tmp_path):
    catalog = _catalog({"a": 12, "b": 9})
    split = stratified_split(catalog, 0.2, 0.2, seed=1)
    write_split(split, tmp_path / "split.csv")
    again = read_split(tmp_path / "split.csv", catalog.class_names)
    assert again.paths == split.paths and again.labels == split.labels


def test_csv_with_unknown_class_is_refused(tmp_path):
    split = stratified_split(_catalog({"a": 5, "b": 5}), 0.2, 0.2, seed=1)
    write_split(split, tmp_path / "split.csv")
    with pytest.raises(DataError, match="class 'b' is not in the data set"):
        read_split(tmp_path / "split.csv", ("a", "c"))


def test_groups_stay_in_one_subset_and_conflicts_go_to_train():
    catalog = _catalog({"a": 30, "b": 30})
    groups = [("/d/a/0.jpg", "/d/a/1.jpg", "/d/a/2.jpg"), ("/d/b/5.jpg", "/d/b/9.jpg"),
              ("/d/a/7.jpg", "/d/b/7.jpg")]  # the last: one image under two classes
    for seed in range(20):
        split = stratified_split(catalog, 0.2, 0.2, seed=seed, groups=groups)
        where = {p: s for s in SUBSETS for p in split.paths[s]}
        assert len(where) == 60
        for group in groups[:2]:
            assert len({where[p] for p in group}) == 1, (seed, group)
        assert where["/d/a/7.jpg"] == where["/d/b/7.jpg"] == "train"


def test_no_groups_gives_the_split_made_before_groups():
    """The grouped split with singleton units equals the old per-class permutation, so existing
    data sets without duplicates keep their split for a given seed."""
    import numpy as np

    catalog = _catalog({"a": 17, "b": 11})
    split = stratified_split(catalog, 0.2, 0.2, seed=5)
    rng = np.random.default_rng(5)
    labels = np.asarray(catalog.labels)
    expected_test = []
    for label, n in ((0, 17), (1, 11)):
        order = rng.permutation(np.flatnonzero(labels == label))
        expected_test.extend(catalog.paths[i] for i in order[:max(round(n * 0.2), 1)])
    assert set(split.paths["test"]) == set(expected_test)
