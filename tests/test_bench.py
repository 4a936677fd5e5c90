"""The benchmark's output (llama32_native.bench): header first, units on every column, defaults in --help,
a warning when other work is running, the library's thread default.

Contract under test: the output a user reads, with the measurements replaced by fixed rows (the measuring itself
is exercised by `llama32-native bench` in bench/RESULTS.md).
"""

from __future__ import annotations

import re

import pytest
from llama32_native import bench, threads

ROW = {"engine": "ours", "arch": "1b", "quant": "q4_0", "threads": 2, "pp_tok_s": 123.4, "tg_tok_s": 30.0,
       "ttft_s": 0.52, "load_s": 1.5, "peak_rss_bytes": 2 << 30, "python_share": 0.02, "bytes_per_token": 1e9}


def _run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], busy: float,
              bandwidths: list[float], argv: list[str]) -> tuple[str, list[tuple]]:
    calls: list[tuple] = []
    probes = iter(bandwidths)
    monkeypatch.setattr(bench, "bandwidth", lambda t: next(probes))
    monkeypatch.setattr(bench, "other_load", lambda seconds=0.5: busy)
    monkeypatch.setattr(bench, "_run_config", lambda *a: calls.append(a) or dict(ROW, threads=a[2]))
    assert bench.main(argv) == 0
    return capsys.readouterr().out, calls


def test_header_first_with_units(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out, calls = _run_main(monkeypatch, capsys, 0.0, [100e9, 100e9], ["--quant", "q4_0", "--n-prompt", "64"])
    lines = [ln for ln in out.splitlines() if not ln.startswith("#")]
    header, rows = lines[:4], lines[4:]
    assert "prefill" in header[0] and "(64 tok)" in header[2] and "(128 tok)" in header[2]  # the real lengths
    assert "roofline" in header[1] and "tok/s" in header[2] and "% of" in header[1]
    assert set(header[3]) == {"-"}
    # decode 30 tok/s against a roofline of 100 GB/s / 1 GB a token = 100 tok/s
    assert len(rows) == 1 and rows[0].split()[4:8] == ["123.4", "30.00", "100.00", "30%"]
    assert "WARNING" not in out
    assert [c[2] for c in calls] == [threads.default_threads()]  # the library's default thread count
    assert "prefill: prompt tokens/s" in out  # the legend


def test_warnings_when_other_work_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = _run_main(monkeypatch, capsys, 1.3, [10e9, 6e9], ["--quant", "q4_0", "--threads", "1"])
    warnings = [ln for ln in out.splitlines() if ln.startswith("# WARNING")]
    assert len(warnings) == 2
    assert "1.3 CPUs" in warnings[0] and "40%" in warnings[1]
    assert out.index("# WARNING") < out.index("prefill")  # before the table


def test_help_gives_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    text = capsys.readouterr().out
    options = re.findall(r"^\s+(--[a-z-]+)", text, flags=re.MULTILINE)
    assert {"--arch", "--quant", "--threads", "--n-prompt", "--n-gen", "--repeats", "--kv-cache"} <= set(options)
    body = text.split("options:")[1]
    for block in re.split(r"\n  (?=-)", body)[1:]:
        if not block.startswith("-h"):
            assert "(default:" in " ".join(block.split()), block


def test_other_load_measures_others_only() -> None:
    import os

    value = bench.other_load(0.5)
    assert value == -1.0 or 0.0 <= value <= (os.cpu_count() or 1) + 1.0  # tick rounding of /proc/stat
    assert bench.busy_warnings(0.1, {1: 0.05}) == []
