"""scripts/bench.py --quick runs end to end and reports every section with sane figures.

Speed targets are not asserted: timings on a shared machine are too noisy for a test.
"""

import json
import math
import os
import re
import subprocess
import sys

from conftest import ROOT

SECTIONS = ("[1] sampler", "[2] one training update", "[3] maligan_mixed update time",
            "[4] peak memory", "summary:")


def test_bench_quick_reports_every_section(tmp_path):
    out = tmp_path / "ratios.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = proc.stdout
    for section in SECTIONS:
        assert section in report, f"missing {section!r} in:\n{report}"
    assert "torch.set_num_threads(1)" in report

    results = json.loads(out.read_text())
    ratios, verdicts = results["ratios"], results["verdicts"]
    expected = {
        "sampler.transformer_lm.naive_over_incremental",
        "sampler.transformer_lm.seqgen_over_incremental",
        "sampler.lstm_lm.naive_over_incremental",
        "sampler.lstm_lm.seqgen_over_incremental",
        "update.transformer_lm.maligan_mixed_N0",
        "update.transformer_lm.maligan_mixed_Nhalf",
        "rollout.transformer_lm.seqgan.naive_over_batched",
        "rollout.transformer_lm.maligan_rollout.naive_over_batched",
        "rollout.transformer_lm.seqgan.per_step_over_batched",
        "sampler.draw.softmax_over_in_place",
        "memory.transformer_lm.rss_peak_over_mle",
    }
    assert expected <= set(ratios), sorted(expected - set(ratios))
    assert all(math.isfinite(v) and v > 0 for v in ratios.values()), ratios
    assert set(results["exponents"]) == {
        "scaling.transformer_lm.exponent_T", "scaling.transformer_lm.exponent_m"
    }
    assert all(math.isfinite(v) for v in results["exponents"].values())

    # The printed ratios are the same finite positive figures; each target has a verdict.
    printed = re.findall(r"^ {4}.+? (-?[\d.]+|nan|inf)x ", report, re.MULTILINE)
    assert len(printed) == len(ratios)
    assert all(math.isfinite(float(v)) and float(v) > 0 for v in printed)
    verdict_lines = [line for line in report.splitlines() if line.endswith(("PASS", "MISS"))]
    assert len(verdict_lines) == len(verdicts) >= 12
