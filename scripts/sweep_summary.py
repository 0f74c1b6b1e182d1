"""One table over the experiments' temperature sweeps: does any adversarial model reach a
point on the quality-diversity plane that no temperature of MLE reaches?

For every sweep found in the given ``results.json`` files (a list of records with
``name``, ``temperature``, ``quality``, ``diversity`` and the metric names), and for
every model other than the baseline: its point at T = 1 (with the 95 % bootstrap
interval of its quality where the sweep recorded one), the baseline's quality at the
same diversity (its sweep points joined by straight lines; "-" outside the swept
temperatures), and the temperatures at which the model is beyond the baseline
(``evaluation.beyond_baseline``), apart from those past the diversity the baseline's
temperatures span (``evaluation.past_baseline_range``), which a temperature outside the
sweep may reach and which therefore do not count.

    python scripts/sweep_summary.py examples/*/results/results.json [--baseline MLE]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fairseq_maligan.errors import ConfigError, existing_file, install_excepthook
from fairseq_maligan.evaluation import (
    baseline_quality_at,
    beyond_baseline,
    past_baseline_range,
)

SWEEP_KEYS = {"name", "temperature", "quality", "diversity", "quality_metric",
              "diversity_metric"}


def find_sweeps(value: Any, where: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(label, records) of every sweep inside a results JSON value, depth first."""
    if isinstance(value, list) and value and all(
            isinstance(r, dict) and SWEEP_KEYS <= r.keys() for r in value):
        yield where, value
    elif isinstance(value, dict):
        for key, inner in value.items():
            if key == "sweeps" and isinstance(inner, dict):  # seed -> sweep (over_seeds)
                for seed, records in inner.items():
                    yield from find_sweeps(records, f"{where}/seed{seed}")
            else:
                yield from find_sweeps(inner, f"{where}/{key}" if key != "sweep" else where)


def sweep_label(path: Path) -> str:
    """The experiment a results file belongs to and where inside its ``results/`` folder it
    lies: ``examples/coco/results/seed2/sweep_with_pretrained.json`` ->
    ``coco/seed2/sweep_with_pretrained``, ``examples/poems/results/results.json`` ->
    ``poems``; a file outside a ``results/`` folder is labelled by its own folder."""
    folders = path.parent.parts
    start = len(folders) - 1 - folders[::-1].index("results") if "results" in folders \
        else len(folders)
    parts = [*folders[start - 1:start], *folders[start + 1:]]
    if path.name != "results.json":
        parts.append(path.stem)
    return "/".join(parts) or path.stem


def summary_rows(records: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """Per model other than ``baseline``: its T = 1 point, the baseline there, the
    temperatures beyond inside the baseline's range and those past it."""
    beyond = beyond_baseline(records, baseline)
    past = past_baseline_range(records, baseline)
    rows = []
    for name, temperatures in beyond.items():
        at_one = next((r for r in records if r["name"] == name and r["temperature"] == 1.0),
                      None)
        quality = at_one["quality"] if at_one else math.nan
        diversity = at_one["diversity"] if at_one else math.nan
        interval = at_one.get(f"{at_one['quality_metric']}_ci") if at_one else None
        spread = at_one.get(f"{at_one['diversity_metric']}_ci") if at_one else None
        rows.append({
            "model": name, "quality": quality, "diversity": diversity,
            "quality_ci": interval,
            "baseline_quality": baseline_quality_at(records, baseline, diversity)
            if math.isfinite(diversity) else math.nan,
            "baseline_over_diversity_ci": sorted(
                baseline_quality_at(records, baseline, end) for end in spread)
            if spread else None,
            "beyond": [t for t in temperatures if t not in past[name]],
            "past_range": past[name],
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=existing_file, help="results.json files")
    parser.add_argument("--baseline", default="MLE", help="the baseline model's name")
    args = parser.parse_args()

    def cell(value: float) -> str:
        return "-" if not math.isfinite(value) else f"{value:.3f}"

    def span(interval: list[float] | None) -> str:
        return f"{cell(interval[0])}..{cell(interval[1])}" if interval else "-"

    print("| sweep | quality / diversity | model | T = 1 | its quality's 95 % CI | "
          "baseline at that diversity | baseline over its diversity's 95 % CI | "
          "beyond the baseline |")
    print("|---|---|---|---|---|---|---|---|")
    for path in args.results:
        try:
            results = json.loads(Path(path).read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"results: {path} is not a results JSON file ({error})") from None
        for label, records in find_sweeps(results, sweep_label(Path(path))):
            axes = f"{records[0]['quality_metric']} / {records[0]['diversity_metric']}"
            for row in summary_rows(records, args.baseline):
                answer = f"yes, T = {', '.join(map(str, row['beyond']))}" if row["beyond"] \
                    else "no"
                if row["past_range"]:
                    answer += f" (past its range: T = {', '.join(map(str, row['past_range']))})"
                print(f"| {label} | {axes} | {row['model']} | {cell(row['quality'])} / "
                      f"{cell(row['diversity'])} | {span(row['quality_ci'])} | "
                      f"{cell(row['baseline_quality'])} | "
                      f"{span(row['baseline_over_diversity_ci'])} | {answer} |")


if __name__ == "__main__":
    install_excepthook()
    main()
