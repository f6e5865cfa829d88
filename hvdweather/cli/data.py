"""hvdweather-data: make the synthetic WEAPD-like set, or fetch the real MWD / WEAPD photographs.

    hvdweather-data synth OUT --images-per-class 40 --seed 0
    hvdweather-data fetch mwd data/mwd
"""
from __future__ import annotations

import os

import click

from hvdweather.cli.options import CONTEXT


@click.group(context_settings=CONTEXT)
def data_group() -> None:
    """Data sets: make the embedded synthetic WEAPD-like set, or fetch the real MWD / WEAPD photographs."""


@data_group.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--images-per-class", type=click.IntRange(min=1), default=40, show_default=True,
              help="Images drawn for each of the 11 classes.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed: the same seed writes the same bytes.")
@click.option("--overwrite", is_flag=True, help="Replace the synthetic set OUT holds (only a set this command "
              "wrote: anything else in OUT is refused). [default: OUT must be new or empty]")
def synth_command(out: str, images_per_class: int, seed: int, overwrite: bool) -> None:
    """Write a procedurally drawn WEAPD-like data set (11 classes, JPEG+PNG) to OUT (new or empty)."""
    from hvdweather.data.synthetic import clear_synthetic, make_synthetic_dataset

    if os.path.isdir(out) and os.listdir(out):  # old images would stay beside the new ones
        if not overwrite:
            raise click.UsageError(f"OUT {out} is not empty; pass --overwrite to replace the synthetic set in it, "
                                   "or choose a new folder")
        clear_synthetic(out)
    paths = make_synthetic_dataset(out, images_per_class, seed)
    print(f"wrote {len(paths)} images in 11 class folders under {out}")


@data_group.command("fetch")
@click.argument("name", type=click.Choice(["mwd", "weapd"]))
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--from", "archive", default="", type=click.Path(dir_okay=False),
              help="The release's archive, already downloaded (no network needed).")
@click.option("--url", default="", help="Download from here instead of the release's address.")
@click.option("--manifest", default="", type=click.Path(dir_okay=False),
              help="TSV (sha256, size, name) to verify against. [default: the packaged one for mwd; none for weapd]")
@click.option("--verify/--no-verify", "verify_files", default=True, show_default=True,
              help="Refuse an archive whose files differ from the manifest (--no-verify: a re-packed copy).")
def fetch_command(name: str, dest: str, archive: str, url: str, manifest: str, verify_files: bool) -> None:
    """Download (or take --from) the public MWD or WEAPD release, verify it and lay it out as class folders
    in DEST (new or empty), with SHA256SUMS and SOURCE.md (the attribution)."""
    from hvdweather.data.fetch import fetch

    done = fetch(name, dest, archive, url, manifest, verify_files)
    print(f"{name}: {sum(done.per_class.values())} images in {len(done.per_class)} class folders under {done.dest} ("
          + ", ".join(f"{k} {v}" for k, v in done.per_class.items()) + f"); {done.checked}; archive SHA-256 "
          f"{done.archive_sha256}; attribution in {done.dest / 'SOURCE.md'}", flush=True)
