"""hvdweather-bench inference, kept tiny: batch sizes 1 and 2, three repeats, one thread; the table is
built from the JSON lines, and a bad flag or model is a one-line error."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli
from hvdweather.bench.inference import inference_table, parse_counts
from hvdweather.errors import ConfigError


def test_parse_counts_names_the_flag():
    assert parse_counts("1,8,32", "--batch-sizes") == (1, 8, 32)
    assert parse_counts("1,all", "--threads", allow_all=True) == (1, 0)
    for bad in ("0", "1,1", "all", "x"):
        with pytest.raises(ConfigError, match="^--batch-sizes"):
            parse_counts(bad, "--batch-sizes")


def test_table_has_a_row_per_model_and_thread_setting():
    rows = [{"model": m, "input": "x", "threads": t, "measure": "throughput", "batch_size": b,
             "images_per_s": 10.0 * b + t} for m in ("keras", "savedmodel") for t in (1, 2) for b in (1, 4)]
    rows += [{"model": "keras", "input": "x", "threads": 1, "measure": "latency", "latency_p50_ms": 1.5,
              "latency_p95_ms": 2.25}]
    lines = inference_table(rows).splitlines()
    assert len(lines) == 2 + 4 and "images/s @ batch 4" in lines[0]
    assert lines[2] == "| keras | x | 1 | 11.0 | 41.0 | 1.50 | 2.25 |"
    assert lines[-1] == "| savedmodel | x | 2 | 12.0 | 42.0 |  |  |"


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-inference") / "run"
    result = run_cli("hvdweather-train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1",
                     "--batch-size", "4", "--verbose", "0", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.timeout(600)
def test_tiny_benchmark_writes_table_and_json_lines(run, tmp_path):
    result = run_cli("hvdweather-bench", "inference", str(run), "--batch-sizes", "1,2", "--threads", "1",
                     "--repeats", "3", "--out", str(tmp_path), timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "inference.jsonl").read_text().splitlines()]
    speed = [r for r in rows if r["measure"] == "throughput"]
    assert {(r["model"], r["batch_size"]) for r in speed} == {(m, b) for m in ("keras", "savedmodel") for b in (1, 2)}
    assert all(r["threads"] == 1 and r["images_per_s"] > 0 for r in speed)
    latency = [r for r in rows if r["measure"] == "latency"]
    assert len(latency) == 2 and all(0 < r["latency_p50_ms"] <= r["latency_p95_ms"] for r in latency)
    table = (tmp_path / "inference.md").read_text()
    assert table.startswith("CPU: ") and "flags:" in table and table in result.stdout
    assert not any(line.startswith("{") for line in result.stdout.splitlines())  # they are in inference.jsonl
    assert sum(line.startswith(("| keras", "| savedmodel")) for line in table.splitlines()) == 2


@pytest.mark.timeout(120)
def test_bad_model_and_flag_are_one_line_errors(tmp_path):
    for args, needle in (([str(tmp_path / "nope")], "MODEL"), ([str(tmp_path), "--threads", "0"], "--threads")):
        result = run_cli("hvdweather-bench", "inference", *args, timeout=120)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
        assert lines[0].startswith("hvdweather-bench: error: ") and needle in lines[0]


def test_json_lines_go_to_out_or_else_after_the_table(tmp_path, capsys):
    """Issue 25: with --out the JSON lines were printed after the table as well, burying it. Proven to
    fail against the code before the fix (publish was inline there)."""
    from hvdweather.bench.inference import publish

    rows = [{"model": "keras", "input": "x", "threads": 1, "measure": "throughput", "batch_size": 1,
             "images_per_s": 10.0}]
    publish(rows, tmp_path)
    printed = capsys.readouterr().out
    assert "| keras | x | 1 | 10.0 |" in printed and '"images_per_s"' not in printed
    assert printed.rstrip().endswith(f"wrote {tmp_path / 'inference.jsonl'} and {tmp_path / 'inference.md'}")
    assert json.loads((tmp_path / "inference.jsonl").read_text()) == rows[0]
    publish(rows, None)
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == json.dumps(rows[0])
