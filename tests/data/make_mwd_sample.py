"""Rebuild tests/data/mwd/ (the committed real sample) from a full MWD copy.

    python tests/data/make_mwd_sample.py ../shared/data/mwd tests/data/mwd

11 photos per class, chosen by name, downscaled to at most 320 px a side (JPEG quality 85) so the
sample stays small, with the cases a real set brings kept as they are in MWD:
- a byte-identical pair in one class (cloudy102.jpg = cloudy146.jpg), and one across extensions
  (rain142.jpg = rain24.jpeg): each pair is written once and copied, so it stays byte-identical;
- a GIF named .jpg (rain141.jpg), shrunk but still a GIF;
- a large photo (sunrise116.jpg), kept at 1600 px so the reduced-DCT-scale decode path is used.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PIL import Image

PER_CLASS = 11
SMALL_SIDE = 320
LARGE_SIDE = 1600
PAIRS = {"cloudy": ("cloudy102.jpg", "cloudy146.jpg"), "rain": ("rain142.jpg", "rain24.jpeg")}
GIF_AS_JPG = {"rain": "rain141.jpg"}
LARGE = {"sunrise": "sunrise116.jpg"}


def shrink(source: Path, target: Path, side: int) -> None:
    with Image.open(source) as image:
        image.seek(0)
        fmt = image.format
        image = image.convert("RGB") if fmt != "GIF" else image.convert("P")
        image.thumbnail((side, side))
        if fmt == "GIF":
            image.save(target, format="GIF")
        else:
            image.save(target, format="JPEG", quality=85)


def main(full: str, out: str) -> None:
    full_dir, out_dir = Path(full), Path(out)
    for class_dir in sorted(d for d in full_dir.iterdir() if d.is_dir()):
        name = class_dir.name
        target = out_dir / name
        target.mkdir(parents=True, exist_ok=True)
        pair = PAIRS.get(name, ())
        special = [*pair, *filter(None, [GIF_AS_JPG.get(name), LARGE.get(name)])]
        plain = [p.name for p in sorted(class_dir.iterdir(), key=lambda p: p.name) if p.name not in special]
        chosen = special[:1 if pair else 0] + special[2 if pair else 0:]
        chosen += plain[:PER_CLASS - len(chosen) - (1 if pair else 0)]
        for file in chosen:
            shrink(class_dir / file, target / file, LARGE_SIDE if file == LARGE.get(name) else SMALL_SIDE)
        if pair:
            shutil.copyfile(target / pair[0], target / pair[1])


if __name__ == "__main__":
    main(*sys.argv[1:3])
