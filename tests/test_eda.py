"""The EDA stage: kernels against the reference PyTorch weather project's PIL kernel, exact statistics,
balanced chunks, bit-identical results from every executor (mpi under mpirun), the files and plots written,
one-line bad-input errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from conftest import BIN, run_cli, run_mpirun
from hvdweather.data import records
from hvdweather.data.decode import load_rgb, open_rgb
from hvdweather.data.discovery import discover
from hvdweather.eda.analyse import channel_moments, chunk_tasks, run_eda
from hvdweather.eda.executor import SequentialExecutor, balanced_chunks
from hvdweather.eda.executors import MultiprocessingExecutor
from hvdweather.eda.kernel import (
    analyse_chunk,
    bincount_histograms,
    dense_sizes,
    merge,
    pil_channel_histograms,
    rgb_histograms,
)
from hvdweather.eda.plots import plot_class_counts, plot_histograms, plot_image_sizes

TABLES = ("histograms.npz", "histograms.csv", "class_counts.csv", "summary.json", "skipped.csv", "duplicates.csv",
          "near_duplicates.csv")
PLOTS = ("histograms.png", "class_counts.png", "image_sizes.png")


@pytest.fixture(scope="module")
def sequential_run(dirty_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eda-seq")
    run_eda(str(dirty_data), str(out), SequentialExecutor(), plots=True, progress=False)
    return out


def assert_same_results(a: Path, b: Path) -> None:
    """Bit-identical: every array, every table byte, the summary apart from how the run was made."""
    with np.load(a / "histograms.npz") as left, np.load(b / "histograms.npz") as right:
        assert left.files == right.files
        for key in left.files:
            assert np.array_equal(left[key], right[key]), key
    for name in ("histograms.csv", "class_counts.csv", "skipped.csv", "duplicates.csv", "near_duplicates.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    summaries = [json.loads((d / "summary.json").read_text()) for d in (a, b)]
    for summary in summaries:
        summary.pop("run")
    assert summaries[0] == summaries[1]


def test_kernels_agree_with_the_reference_projects_pil_kernel(tiny_data):
    for path in discover(tiny_data).paths:
        with open_rgb(path) as (rgb, _):
            ours = rgb_histograms(rgb)
        assert ours.dtype == np.int64 and ours.shape == (3, 256)
        assert np.array_equal(ours, pil_channel_histograms(path))
        assert np.array_equal(ours, bincount_histograms(load_rgb(path)))


def test_histogram_sums_equal_pixel_counts(dirty_data, sequential_run):
    catalog = discover(dirty_data)
    with np.load(sequential_run / "histograms.npz") as arrays:
        histograms, names = arrays["histograms"], list(arrays["class_names"])
    for label, name in enumerate(catalog.class_names):
        pixels = 0
        for path, lab in zip(catalog.paths, catalog.labels):
            if lab == label and Path(path).stat().st_size > 0 and not path.endswith("broken.jpg"):
                with Image.open(path) as image:  # the size from the header, independent of the kernel
                    pixels += image.width * image.height
        assert names[label] == name
        assert histograms[label].sum(axis=1).tolist() == [pixels] * 3


def test_channel_moments_are_exact():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    means, stds = channel_moments(bincount_histograms(pixels))
    flat = pixels.reshape(-1, 3).astype(np.float64)
    assert means == pytest.approx(flat.mean(axis=0).tolist(), rel=1e-12)
    assert stds == pytest.approx(flat.std(axis=0).tolist(), rel=1e-12)
    assert channel_moments(np.zeros((3, 256), np.int64)) == ([None] * 3, [None] * 3)


@pytest.mark.parametrize("n, parts", [(24, 5), (7, 3), (3, 8), (1, 1), (100, 16)])
def test_balanced_chunks_partition_images_evenly(n, parts):
    chunks = balanced_chunks(n, parts)
    assert len(chunks) == min(parts, n)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(n))
    sizes = [len(c) for c in chunks]
    assert max(sizes) - min(sizes) <= 1


def test_partial_sums_do_not_depend_on_order(dirty_data):
    catalog = discover(dirty_data)
    tasks = chunk_tasks(catalog, balanced_chunks(len(catalog.paths), 3))
    parts = [analyse_chunk(task) for task in tasks]
    forward, backward = merge(parts, 3), merge(parts[::-1], 3)
    assert np.array_equal(forward.histograms, backward.histograms)
    assert forward.formats == backward.formats and forward.skipped == backward.skipped
    n = len(catalog.paths)
    assert np.array_equal(dense_sizes(forward, n), dense_sizes(backward, n))
    assert sum(dense_sizes(p, n) for p in parts).tolist() == dense_sizes(forward, n).tolist()


def test_outputs_and_plots_are_written(dirty_data, sequential_run):
    for name in TABLES + PLOTS:
        assert (sequential_run / name).stat().st_size > 0, name
    for name in PLOTS:
        assert (sequential_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((sequential_run / "summary.json").read_text())
    assert summary["class_names"] == ["fogsmog", "lightning", "rainbow"]
    assert summary["all"]["images"] == 24 and summary["all"]["skipped"] == 2
    assert summary["classes"]["fogsmog"]["skipped"] == 1 and summary["classes"]["rainbow"]["skipped"] == 1
    assert sum(summary["all"]["formats"].values()) == 24
    assert all(0 < m < 255 for m in summary["all"]["mean"]) and len(summary["all"]["std_unit"]) == 3
    skipped = (sequential_run / "skipped.csv").read_text().splitlines()
    assert len(skipped) == 3 and any("empty file (0 bytes)" in line for line in skipped)
    assert len((sequential_run / "histograms.csv").read_text().splitlines()) == 1 + 3 * 3
    assert (sequential_run / "class_counts.csv").read_text().splitlines()[1].startswith("fogsmog,8,1,")


def test_multiprocessing_gives_bit_identical_results(dirty_data, sequential_run, tmp_path):
    run_eda(str(dirty_data), str(tmp_path), MultiprocessingExecutor(2), plots=False, progress=False)
    assert_same_results(sequential_run, tmp_path)


@pytest.mark.multiprocess
@pytest.mark.timeout(180)
def test_mpi_executor_under_mpirun_gives_bit_identical_results(dirty_data, sequential_run, tmp_path):
    result = run_mpirun("hvdweather-eda", str(dirty_data), "--out", str(tmp_path), "--executor", "mpi",
                        "--no-plots")
    assert result.returncode == 0, result.stderr
    assert "with mpi x 2" in result.stdout
    assert_same_results(sequential_run, tmp_path)


@pytest.mark.multiprocess
@pytest.mark.timeout(180)
@pytest.mark.parametrize("command", ["hvdweather-eda", "hvdweather-prepare"])
@pytest.mark.parametrize("executor", [[], ["--executor", "multiprocessing"]])
def test_a_non_mpi_executor_under_mpirun_is_refused_before_any_work(dirty_data, tmp_path, command, executor):
    """Issue 25: `mpirun -np 2 hvdweather-prepare` without --executor mpi ran the whole job in each rank into
    one --out (a vanished .tfrecord.tmp; the EDA wrote everything twice). Now one line, from one rank,
    exit 2, nothing written. Proven to fail by running it against the code before the fix."""
    out = tmp_path / "out"
    options = [] if command == "hvdweather-prepare" else ["--no-plots"]
    result = run_mpirun(command, str(dirty_data), "--out", str(out), *executor, *options)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if f"{command}: error:" in line]
    assert len(errors) == 1, result.stderr
    assert "under a launch of 2 processes" in errors[0] and "--executor mpi" in errors[0]
    assert not out.exists()


@pytest.mark.timeout(120)
def test_mpi_executor_without_mpirun_runs_as_one_rank_and_says_so(dirty_data, sequential_run, tmp_path):
    result = run_cli("hvdweather-eda", str(dirty_data), "--out", str(tmp_path), "--executor", "mpi",
                     "--no-plots", timeout=100)
    assert result.returncode == 0, result.stderr
    assert "single rank" in result.stderr
    assert "with mpi x 1" in result.stdout
    assert_same_results(sequential_run, tmp_path)


@pytest.mark.parametrize("args, needle", [
    (["{missing}"], "DATA {missing}: directory not found"),  # DATA is an argument, not --data
    (["{empty}"], "DATA {empty}: no images found"),
    (["{data}", "--processes", "0"], "--processes"),
    (["{data}", "--processes", "2"], "--processes 2"),  # sequential is one process
    (["{data}", "--executor", "mpi", "--processes", "3"], "--processes 3"),  # 1 rank without mpirun
    (["{data}", "--out", "{file}/out"], "not writable"),
    (["{data}", "--backend", "sequential"], "No such option '--backend'"),  # the old name, removed
])
def test_bad_input_is_one_line_exit_2(dirty_data, tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("x")
    values = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "data": dirty_data,
              "file": tmp_path / "a-file"}
    argv = [a.format(**values) for a in args]
    needle = needle.format(**values)
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    result = run_cli("hvdweather-eda", *argv, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hvdweather-eda: error:") and needle in lines[0], result.stderr


def test_help_names_executor_not_the_old_backend_flag():
    result = run_cli("hvdweather-eda", "--help", timeout=60)
    assert result.returncode == 0 and "--executor" in result.stdout and "--backend" not in result.stdout


def test_a_prepared_directory_is_refused_naming_the_data_set_to_pass(dirty_data, tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    records.write_metadata(prepared, {"class_names": ["a", "b"], "source": str(dirty_data), "shards": []}, [], [])
    result = run_cli("hvdweather-eda", str(prepared), "--out", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no images found" not in lines[0], result.stderr
    assert f"DATA {prepared}: a directory written by hvdweather-prepare" in lines[0]
    assert lines[0].endswith(str(dirty_data))
    assert not (tmp_path / "out").exists()  # refused before any work


def test_run_records_the_cores_on_the_node_and_per_process(sequential_run):
    run = json.loads((sequential_run / "summary.json").read_text())["run"]
    assert run["cores_on_node"] == os.cpu_count() and run["cores_per_rank"] == len(os.sched_getaffinity(0))
    assert "cores" not in run and run["executor"] == "sequential"


@pytest.mark.multiprocess
@pytest.mark.timeout(180)
def test_cores_on_the_node_under_mpirun_binding_each_rank_to_a_core(dirty_data, tmp_path):
    # mpirun binds each rank to one core (--bind-to core is its default for -np <= 2): the rank's CPU mask
    # then says 1, which the EDA used to record as the run's cores on a 2-core machine.
    ranks = 2 if os.cpu_count() >= 2 else 1
    result = run_cli("mpirun", "--allow-run-as-root", "--bind-to", "core", "-np", str(ranks), "-x", "PATH",
                     str(BIN / "hvdweather-eda"), str(dirty_data), "--out", str(tmp_path), "--executor", "mpi",
                     "--no-plots", "--no-progress", timeout=150)
    assert result.returncode == 0, result.stderr
    run = json.loads((tmp_path / "summary.json").read_text())["run"]
    assert run["cores_on_node"] == os.cpu_count() and run["workers"] == ranks
    assert run["cores_per_rank"] == 1  # bound to one core: a per-rank fact, kept apart from the node's


def test_count_axes_get_whole_number_ticks():
    figure = plot_class_counts(np.array([3, 2, 1]), ("a", "b", "c"))
    ticks = figure.axes[0].get_yticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


@pytest.mark.parametrize("classes", [11, 20])
def test_image_sizes_give_each_class_a_distinct_colour_and_marker(classes):
    """Issue 25: WEAPD's 11 classes got 10 colours (the 11th differed by its marker only). Proven to fail
    (10 colours) against the code before the fix."""
    names = tuple(f"class{i}" for i in range(classes))
    labels = np.repeat(np.arange(classes), 2)
    figure = plot_image_sizes(np.arange(2 * classes) + 100, np.arange(2 * classes) + 200, labels, names)
    qualitative = [to_rgb(f"C{i}") for i in range(10)]  # tab10 first: no light/dark pairs
    styles = []
    for index, collection in enumerate(figure.axes[0].collections):
        colour = tuple(collection.get_facecolor()[0][:3])
        assert index >= 10 or np.allclose(colour, qualitative[index]), colour
        styles.append((tuple(np.round(colour, 3)), collection.get_paths()[0].vertices.tobytes()))
    assert len(styles) == classes and len(set(styles)) == classes
    assert len({colour for colour, _ in styles}) == classes  # a colour of its own, the marker besides


@pytest.mark.parametrize("classes", [11, 8])
def test_histogram_legend_sits_with_the_panels(classes):
    names = tuple(f"c{i}" for i in range(classes))
    figure = plot_histograms(np.ones((classes, 3, 256), np.int64), names)
    figure.canvas.draw()
    legends = figure.legends + [ax.get_legend() for ax in figure.axes if ax.get_legend()]
    assert len(legends) == 1
    box = legends[0].get_window_extent()
    panels = [ax for ax in figure.axes if ax.axison]
    assert not any(box.overlaps(ax.get_window_extent()) for ax in panels)
    grid_top = max(ax.get_tightbbox().y1 for ax in panels)  # with the panel titles
    grid_bottom = min(ax.get_window_extent().y0 for ax in panels)
    # in an empty panel of the grid or right on top of it: never in a corner below the x label
    assert grid_bottom <= box.y0 <= grid_top + 10, (box, grid_bottom, grid_top)


def _with_planted_duplicates(root: Path) -> Path:
    """The committed MWD sample plus a re-encoded, downscaled copy of a photo (a near duplicate: other
    bytes, the same picture) and a byte copy of a cloudy photo filed under rain (a labelling error)."""
    import shutil

    from conftest import MWD_SAMPLE

    data = root / "mwd"
    shutil.copytree(MWD_SAMPLE, data)
    with Image.open(data / "shine" / "shine1.jpg") as image:
        small = image.convert("RGB").resize((image.width * 3 // 4, image.height * 3 // 4))
    small.save(data / "shine" / "shine1_small.jpg", quality=70)
    shutil.copy(data / "cloudy" / "cloudy102.jpg", data / "rain" / "rain_copy.jpg")
    return data


def test_real_photos_get_exact_near_and_cross_class_duplicates_reported(tmp_path):
    import csv

    data = _with_planted_duplicates(tmp_path)
    summary = run_eda(str(data), str(tmp_path / "seq"), SequentialExecutor(), plots=True, progress=False)
    with open(tmp_path / "seq" / "duplicates.csv") as handle:
        groups: dict[str, list[tuple[str, str, str]]] = {}
        for row in csv.DictReader(handle):
            groups.setdefault(row["group"], []).append((row["kind"], row["class_name"], Path(row["path"]).name))
    assert sorted(groups.values()) == [
        [("conflict", "cloudy", "cloudy102.jpg"), ("conflict", "cloudy", "cloudy146.jpg"),
         ("conflict", "rain", "rain_copy.jpg")],
        [("exact", "rain", "rain142.jpg"), ("exact", "rain", "rain24.jpeg")]]
    with open(tmp_path / "seq" / "near_duplicates.csv") as handle:
        near = [(Path(r["path_a"]).name, Path(r["path_b"]).name, int(r["bits"])) for r in csv.DictReader(handle)]
    assert [(a, b) for a, b, _ in near] == [("shine1.jpg", "shine1_small.jpg")]  # byte copies are not "near"
    assert near[0][2] <= 6
    assert summary["duplicates"] == {"exact_groups": 2, "exact_files": 5, "conflict_groups": 1, "near_pairs": 1,
                                     "near_max_bits": 6}
    assert (tmp_path / "seq" / "near_duplicates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run_eda(str(data), str(tmp_path / "mp"), MultiprocessingExecutor(2), plots=False, progress=False)
    assert_same_results(tmp_path / "seq", tmp_path / "mp")


def test_no_duplicates_flag_skips_the_hashing(tmp_path):
    result = run_cli("hvdweather-eda", str(_with_planted_duplicates(tmp_path)), "--out", str(tmp_path / "out"),
                     "--no-duplicates", "--no-plots", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp_path / "out" / "duplicates.csv").exists() and "near-duplicate" not in result.stdout
    assert "duplicates" not in json.loads((tmp_path / "out" / "summary.json").read_text())
