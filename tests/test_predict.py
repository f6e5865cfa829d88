"""hvdweather-predict and hvdweather-evaluate on a run trained once for this module: CSV layout, a corrupt
file listed not fatal, a copied run, the training report reproduced, bad input, two Horovod ranks."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import BIN, MWD_SAMPLE, run_cli, run_mpirun
from hvdweather.evaluate.predict import Predictions, prediction_rows
from hvdweather.evaluate.runmodel import find_images

CLASSES = ("fogsmog", "lightning", "rainbow")


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "run"
    result = run_cli("hvdweather-train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1",
                     "--batch-size", "4", "--verbose", "0", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def images(tiny_data, tmp_path_factory):
    """Good JPEG and PNG files from the data set, a grayscale PNG, real photos (MWD: a GIF named .jpg, a
    1600 x 1000 JPEG, one photo as .jpg and as .jpeg), and a corrupt JPEG among them."""
    root = tmp_path_factory.mktemp("images")
    shutil.copytree(tiny_data / "rainbow", root / "a")
    shutil.copytree(tiny_data / "lightning", root / "b" / "deeper")
    (root / "b" / "real").mkdir()
    for name in ("rain/rain141.jpg", "sunrise/sunrise116.jpg", "rain/rain142.jpg", "rain/rain24.jpeg"):
        shutil.copy(MWD_SAMPLE / name, root / "b" / "real")
    Image.open(next((tiny_data / "fogsmog").glob("*.jpg"))).convert("L").save(root / "b" / "gray.png")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"not really a JPEG" * 4)
    (root / "b" / ".hidden.jpg").write_bytes(b"ignored")
    return root


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _one_line_error(result, prog: str, *needles: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip() and "I0000" not in line]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_find_images_keeps_argument_order_and_the_discovery_rules(images):
    single = str(sorted((images / "a").iterdir())[0])
    found = find_images([str(images / "b"), single, str(images / "a")])
    names = [p.rsplit("/", 1)[-1] for p in found]
    assert ".hidden.jpg" not in names and "broken.jpg" in names and "gray.png" in names
    b_files = [p for p in found if "/b/" in p]
    assert found[:len(b_files)] == b_files  # folder b first, as given, then the single file
    assert found[len(b_files)] == single and found.count(single) == 1  # not listed again with its folder
    assert len(found) == len(b_files) + 8


def test_prediction_rows_order_top_k_and_list_unreadable_files():
    probs = np.array([[0.1, 0.7, 0.2], [np.nan] * 3], np.float32)
    header, rows = prediction_rows(Predictions(("x.jpg", "y.jpg"), probs, ("", "bad file")), CLASSES, 2)
    assert header == ["path", "predicted_class", "probability", "top1_class", "top1_probability",
                      "top2_class", "top2_probability", "error"]
    assert rows[0][:2] == ["x.jpg", "lightning"] and float(rows[0][2]) == pytest.approx(0.7)
    assert rows[0][5] == "rainbow" and rows[0][-1] == ""
    assert rows[1] == ["y.jpg", "", "", "", "", "", "", "bad file"]


@pytest.mark.timeout(300)
def test_predict_lists_every_image_and_survives_a_corrupt_one(run, images, tmp_path):
    out = tmp_path / "p.csv"
    result = run_cli("hvdweather-predict", str(run), str(images), "--out", str(out), "--top-k", "3",
                     "--grid", str(tmp_path / "grid.png"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(out)
    assert [r["path"] for r in rows] == find_images([str(images)])
    broken = [r for r in rows if r["path"].endswith("broken.jpg")]
    assert len(broken) == 1 and broken[0]["predicted_class"] == "" and broken[0]["error"]
    good = [r for r in rows if not r["error"]]
    assert len(good) == len(rows) - 1
    for row in good:
        probs = [float(row[f"top{k}_probability"]) for k in (1, 2, 3)]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5) and probs == sorted(probs, reverse=True)
        assert row["predicted_class"] == row["top1_class"] in CLASSES
    assert f"predicted {len(good)} of {len(rows)} image(s)" in result.stdout and "1 unreadable" in result.stdout
    assert (tmp_path / "grid.png").stat().st_size > 0
    same = [{k: v for k, v in r.items() if k != "path"} for r in rows
            if r["path"].endswith(("rain142.jpg", "rain24.jpeg"))]
    assert len(same) == 2 and same[0] == same[1]  # one photo's bytes under two names: one prediction


@pytest.mark.timeout(300)
def test_a_copied_run_predicts_the_same(run, images, tmp_path):
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    for name in ("config.json", "best.keras"):  # nothing else of the run travels
        shutil.copy(run / name, copy / name)
    folder = str(images / "a")
    first = run_cli("hvdweather-predict", str(run), folder, "--out", str(tmp_path / "1.csv"), timeout=300)
    second = run_cli("hvdweather-predict", str(copy / "best.keras"), folder, "--out", str(tmp_path / "2.csv"),
                     timeout=300)
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-3000:]
    assert _rows(tmp_path / "1.csv") == _rows(tmp_path / "2.csv")


@pytest.mark.timeout(300)
def test_evaluate_reproduces_the_training_report(run):
    result = run_cli("hvdweather-evaluate", str(run), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = run / "eval-test-best"
    for name in ("classification_report.csv", "confusion_matrix.csv"):
        assert (folder / name).read_text() == (run / "report" / name).read_text(), name
    for name in ("misclassified.png", "examples.png", "confusion_matrix.png"):
        assert (folder / name).stat().st_size > 0
    top = {int(r["k"]): float(r["accuracy"]) for r in _rows(folder / "top_k_accuracy.csv")}
    accuracy = next(float(r["f1"]) for r in _rows(run / "report" / "classification_report.csv")
                    if r["class"] == "accuracy")
    assert top[1] == pytest.approx(accuracy, abs=1e-4) and top[3] == 1.0 and top[1] <= top[2] <= top[3]


@pytest.mark.timeout(300)
def test_evaluate_and_predict_give_the_same_probabilities(run, tmp_path):
    result = run_cli("hvdweather-evaluate", str(run), "--out", str(tmp_path / "eval"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = _rows(tmp_path / "eval" / "predictions.csv")
    paths = [r["path"] for r in evaluated]
    result = run_cli("hvdweather-predict", str(run), *paths, "--out", str(tmp_path / "p.csv"), "--top-k", "3",
                     "--batch-size", "3", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    predicted = _rows(tmp_path / "p.csv")
    for a, b in zip(evaluated, predicted, strict=True):
        assert a["path"] == b["path"] and a["predicted_class"] == b["predicted_class"]
        for k in (1, 2, 3):
            assert a[f"top{k}_class"] == b[f"top{k}_class"]
            assert float(a[f"top{k}_probability"]) == pytest.approx(float(b[f"top{k}_probability"]), abs=1e-5)


@pytest.mark.timeout(300)
def test_evaluate_on_another_labelled_set_matches_classes_by_name(run, tiny_data, tmp_path):
    data = tmp_path / "other"
    for name in ("rainbow", "fogsmog"):  # a subset, listed in another order than the model's
        shutil.copytree(tiny_data / name, data / name)
    result = run_cli("hvdweather-evaluate", str(run), "--data", str(data), "--out", str(tmp_path / "e"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(tmp_path / "e" / "predictions.csv")
    assert len(rows) == 16
    assert all(r["true_class"] == r["path"].split("/")[-2] for r in rows)
    (data / "hail").mkdir()
    shutil.copy(next((tiny_data / "rainbow").iterdir()), data / "hail" / "x.jpg")
    result = run_cli("hvdweather-evaluate", str(run), "--data", str(data), "--out", str(tmp_path / "f"), timeout=120)
    _one_line_error(result, "hvdweather-evaluate", "--data", "hail", "not known to the model")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["missing model", "empty folder", "top-k", "no images"])
def test_bad_input_is_one_line_and_exit_2(run, tmp_path, case):
    (tmp_path / "empty").mkdir()
    args = {"missing model": [str(tmp_path / "nope"), str(tmp_path)],
            "empty folder": [str(run), str(tmp_path / "empty")],
            "top-k": [str(run), str(tmp_path), "--top-k", "4"],
            "no images": [str(run)]}[case]
    needles = {"missing model": ["MODEL", "not found"], "empty folder": ["IMAGES", "no images found"],
               "top-k": ["--top-k 4", "3 classes"], "no images": ["IMAGES", "at least one"]}[case]
    result = run_cli("hvdweather-predict", *args, "--out", str(tmp_path / "p.csv"), timeout=120)
    _one_line_error(result, "hvdweather-predict", *needles)


@pytest.fixture(scope="module")
def one_process_csv(run, images, tmp_path_factory):
    """The CSV of one process. One thread per process on both sides: the kernels' summation order then
    does not change with the launch (two ranks on two cores default to one thread each, one process to two)."""
    out = tmp_path_factory.mktemp("one") / "one.csv"
    one = run_cli("hvdweather-predict", str(run), str(images), "--out", str(out), "--batch-size", "4",
                  "--threads-per-worker", "1", timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    return out


@pytest.mark.multiprocess
@pytest.mark.timeout(400)
@pytest.mark.parametrize("launcher", ["horovodrun", "mpirun"])
def test_two_horovod_ranks_write_the_one_process_csv(run, images, one_process_csv, tmp_path, launcher):
    """README: under horovodrun or mpirun the CSV is the one process's, to the bit. Checked once under
    both launchers with the gather skipped in predict_sharded (rank 0's CSV then lacked rank 1's rows)."""
    args = [str(run), str(images), "--out", str(tmp_path / "two.csv"), "--batch-size", "4",
            "--threads-per-worker", "1"]
    if launcher == "horovodrun":
        two = run_cli("horovodrun", "-np", "2", str(BIN / "hvdweather-predict"), *args, timeout=300)
    else:
        two = run_mpirun("hvdweather-predict", *args, timeout=300)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert (tmp_path / "two.csv").read_text() == one_process_csv.read_text()
    assert two.stdout.count("1 unreadable") == 1  # one primary: the two processes were one job of 2 ranks
