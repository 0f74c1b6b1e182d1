"""The demo's quick mode runs end to end and prints its table with finite figures."""

import math
import os
import re
import subprocess
import sys

import pytest
from conftest import GUARDED_ENV, ROOT


@pytest.mark.slow
def test_demo_quick_prints_results_table(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env={**os.environ, **GUARDED_ENV},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = r"^(MLE \(\w+\)|MaliGAN \(maligan_mixed\))\s+([\d.]+|nan)\s+([\d.]+)\s+([\d.]+)%$"
    rows = {
        name: (float(a), float(b), float(c))
        for name, a, b, c in re.findall(line, proc.stdout, re.MULTILINE)
    }
    assert set(rows) == {"MLE (pretrained)", "MLE (continued)", "MaliGAN (maligan_mixed)"}
    for oracle_nll, test_nll, invalid in rows.values():
        assert math.isfinite(test_nll) and test_nll > 0 and 0 <= invalid <= 100
        assert (math.isfinite(oracle_nll) and oracle_nll > 0) or invalid == 100
