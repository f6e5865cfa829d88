"""The EDA's duplicate report, from every file's fingerprints (hvdweather.data.fingerprint):

    duplicates.csv       group, kind, class_name, path: byte-identical files (kind exact; conflict when
                         one group spans classes, a labelling error)
    near_duplicates.csv  path_a, class_a, path_b, class_b, bits: files whose pHashes differ in at most
                         NEAR_DUPLICATE_BITS bits but whose bytes differ (re-encoded, resized), closest first
    near_duplicates.png  the closest near pairs and the farthest ones (where the threshold bites), side by
                         side, for a look by eye

These are the groups a training run's split keeps together (exact by default, near with
--group-near-duplicates): the same functions and the same threshold make them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdweather.data.fingerprint import NEAR_DUPLICATE_BITS, duplicate_groups, near_duplicate_pairs
from hvdweather.eda.outputs import write_csv

SHEET_PAIRS = 8  # pairs on near_duplicates.png: half the closest, half the farthest


@dataclass(frozen=True)
class DuplicateReport:
    class_of: dict[str, str]  # path -> class name, for every fingerprinted file
    groups: list[tuple[str, ...]]  # byte-identical files, two or more each
    near: list[tuple[str, str, int]]  # (a, b, bits), bytes differ, closest first

    def kind(self, group: tuple[str, ...]) -> str:
        return "conflict" if len({self.class_of[path] for path in group}) > 1 else "exact"

    def summary(self) -> dict[str, Any]:
        """summary.json's "duplicates" section."""
        return {"exact_groups": len(self.groups), "exact_files": sum(len(g) for g in self.groups),
                "conflict_groups": sum(self.kind(g) == "conflict" for g in self.groups),
                "near_pairs": len(self.near), "near_max_bits": NEAR_DUPLICATE_BITS}

    def write(self, out: Path, plots: bool) -> None:
        write_csv(out / "duplicates.csv", ["group", "kind", "class_name", "path"],
                  [[number, self.kind(group), self.class_of[path], path]
                   for number, group in enumerate(self.groups, start=1) for path in group])
        write_csv(out / "near_duplicates.csv", ["path_a", "class_a", "path_b", "class_b", "bits"],
                  [[a, self.class_of[a], b, self.class_of[b], bits] for a, b, bits in self.near])
        if plots and self.near:
            from hvdweather.sheets import plot_contact_sheet, save_sheet

            shown = sheet_pairs(self.near)
            tiles = [(path, f"{self.class_of[path]}/{Path(path).name[:20]}\n{bits} bit(s) apart", None)
                     for a, b, bits in shown for path in (a, b)]
            title = f"Near-duplicate pairs, closest and farthest ({len(shown)} of {len(self.near)}), side by side"
            save_sheet(plot_contact_sheet(tiles, title, columns=4), out / "near_duplicates.png")

    def line(self) -> str:
        """The printed summary's duplicate sentence."""
        summary = self.summary()
        conflicts = f" ({summary['conflict_groups']} across classes)" if summary["conflict_groups"] else ""
        return (f"{summary['exact_groups']} group(s) of byte-identical files ({summary['exact_files']} files)"
                f"{conflicts}, {summary['near_pairs']} near-duplicate pair(s) within {NEAR_DUPLICATE_BITS} pHash bits: "
                "duplicates.csv, near_duplicates.csv" + (", near_duplicates.png" if self.near else ""))


def sheet_pairs(near: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """The pairs drawn: all of them when few, else the closest and the farthest halves of SHEET_PAIRS."""
    if len(near) <= SHEET_PAIRS:
        return near
    return near[:SHEET_PAIRS // 2] + near[-(SHEET_PAIRS - SHEET_PAIRS // 2):]


def find_report(totals) -> DuplicateReport:
    """The report over the decoded files' fingerprints (`totals`: hvdweather.eda.analyse.EdaTotals)."""
    catalog = totals.catalog
    indices = sorted(totals.fingerprints)
    paths = [catalog.paths[i] for i in indices]
    digests = [totals.fingerprints[i][0] for i in indices]
    class_of = {catalog.paths[i]: catalog.class_names[catalog.labels[i]] for i in indices}
    digest_of = dict(zip(paths, digests))
    near = [pair for pair in near_duplicate_pairs(paths, [totals.fingerprints[i][1] for i in indices])
            if digest_of[pair[0]] != digest_of[pair[1]]]
    return DuplicateReport(class_of, duplicate_groups(paths, digests), near)

