"""Every script's own bad option or bad file stops it with one line naming the option and
the value or file: never a traceback, and a non-zero exit code.

One row per bad input: (script, arguments, words that the last stderr line must hold).
``{tmp}`` is the test's own folder (``empty.pt`` and ``file.txt`` are in it); ``{ckpt}``,
``{truncated}``, ``{oracle}`` and ``{data}`` are the files of the fixtures named in
``FIXTURE_FILES``, built only for the rows that use them.
"""

import os
import string
import subprocess
import sys

import pytest
from conftest import ROOT

ROWS = [
    ("sample.py", ["--path", "{tmp}/missing.pt", "--num", "-1"], ["--num", "positive", "-1"]),
    ("sample.py", ["--path", "{tmp}/missing.pt", "--max-len", "0"], ["--max-len", "got 0"]),
    ("sample.py", ["--path", "{tmp}/missing.pt", "--temperature", "nan"],
     ["--temperature", "finite", "nan"]),
    ("sample.py", ["--path", "{tmp}/missing.pt", "--output", "{tmp}/nofolder/out.txt"],
     ["--output", "{tmp}/nofolder", "does not exist"]),
    ("sample.py", ["--path", "{tmp}/missing.pt", "--data", "{tmp}/no-data"],
     ["--data", "no such directory", "{tmp}/no-data"]),
    ("sample.py", ["--path", "{tmp}/missing.pt"], ["--path", "no such file", "{tmp}/missing.pt"]),
    ("sample.py", ["--path", "{tmp}/empty.pt"], ["--path", "{tmp}/empty.pt", "empty"]),
    ("sample.py", ["--path", "{truncated}"], ["--path", "{truncated}", "truncated"]),
    ("sample.py", ["--path", "{tmp}"], ["--path", "{tmp}", "is a directory"]),
    ("sample.py", ["--path", "{oracle}"], ["--path", "{oracle}", "oracle", "not a generator"]),
    ("evaluate.py", ["--path", "{ckpt}", "--num-samples", "0"], ["--num-samples", "got 0"]),
    ("evaluate.py", ["--path", "{ckpt}", "--orders", "2", "0"], ["--orders", "got 0"]),
    ("evaluate.py", ["--path", "{ckpt}", "--temperature", "inf"], ["--temperature", "inf"]),
    ("evaluate.py", ["--path", "{ckpt}", "--oracle", "{ckpt}"],
     ["--oracle", "{ckpt}", "generator checkpoint", "not a synthetic oracle"]),
    ("temperature_sweep.py", ["--path", "{ckpt}", "--oracle", "{oracle}",
                              "--temperatures", "1.0", "-0.5"], ["--temperatures", "-0.5"]),
    ("temperature_sweep.py", ["--path", "{ckpt}", "--oracle", "{oracle}", "--max-order", "0"],
     ["--max-order", "got 0"]),
    ("temperature_sweep.py", ["--path", "{ckpt}", "--oracle", "{oracle}",
                              "--output-json", "{tmp}/nofolder/sweep.json"],
     ["--output-json", "{tmp}/nofolder"]),
    ("pretrain_discriminator.py", ["{tmp}/no-data", "--generator", "{ckpt}", "--output",
                                   "{tmp}/d.pt"], ["data", "no such directory", "{tmp}/no-data"]),
    ("pretrain_discriminator.py", ["{data}", "--generator", "{ckpt}", "--output", "{tmp}/d.pt",
                                   "--updates", "0"], ["--updates", "got 0"]),
    ("pretrain_discriminator.py", ["{data}", "--generator", "{ckpt}", "--output", "{tmp}/d.pt",
                                   "--lr", "-1"], ["--lr", "-1"]),
    ("pretrain_discriminator.py", ["{data}", "--generator", "{ckpt}", "--output", "{tmp}/d.pt",
                                   "--prefix-len", "-1"], ["--prefix-len", ">= 0", "-1"]),
    ("pretrain_discriminator.py", ["{data}", "--generator", "{oracle}", "--output",
                                   "{tmp}/d.pt"], ["--generator", "{oracle}", "not a generator"]),
    ("export_generator.py", ["{truncated}", "{tmp}/out.pt"], ["{truncated}", "truncated"]),
    ("export_generator.py", ["{ckpt}", "{tmp}/nofolder/out.pt"],
     ["output", "{tmp}/nofolder", "does not exist"]),
    ("sweep_summary.py", ["{tmp}/missing.json"], ["results", "no such file", "{tmp}/missing"]),
    ("sweep_summary.py", ["{tmp}/empty.pt"], ["results", "{tmp}/empty.pt", "not a results JSON"]),
    ("make_oracle_data.py", ["--out", "{tmp}/oracle", "--vocab-size", "0"],
     ["--vocab-size", "got 0"]),
    ("make_oracle_data.py", ["--out", "{tmp}/file.txt/oracle"],
     ["--out", "{tmp}/file.txt", "is a file"]),
]

FIXTURE_FILES = {
    "ckpt": "maligan_checkpoint",
    "truncated": "truncated_checkpoint",
    "oracle": "oracle_file",
    "data": "lm_data",
}
"""Placeholder -> the fixture that makes its file."""


@pytest.fixture(scope="module")
def truncated_checkpoint(maligan_checkpoint, tmp_path_factory):
    """The first 1000 bytes of the real checkpoint, as a copy cut short would leave."""
    path = tmp_path_factory.mktemp("truncated") / "checkpoint_cut.pt"
    path.write_bytes(maligan_checkpoint.read_bytes()[:1000])
    return path


@pytest.fixture(scope="module")
def oracle_file(lm_data):
    """The oracle.pt that make_oracle_data.py wrote beside the binarised data."""
    return lm_data.parent / "raw" / "oracle.pt"


@pytest.mark.parametrize(
    "script, args, words", ROWS,
    ids=[f"{script.removesuffix('.py')}:{' '.join(args)}" for script, args, _ in ROWS],
)
def test_bad_input_stops_with_one_line(request, tmp_path, script, args, words):
    (tmp_path / "empty.pt").touch()
    (tmp_path / "file.txt").write_text("not a folder\n")
    used = {name for text in args + words for _, name, _, _ in string.Formatter().parse(text)}
    values = {"tmp": str(tmp_path)} | {
        name: str(request.getfixturevalue(fixture))
        for name, fixture in FIXTURE_FILES.items() if name in used
    }
    proc = subprocess.run(
        [sys.executable, f"scripts/{script}", *(arg.format(**values) for arg in args)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    for word in words:
        assert word.format(**values) in last, last
