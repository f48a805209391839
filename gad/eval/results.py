"""The results of an evaluation: ``{model: {set: metrics}}`` and its file, ``results.json``.

The metrics of one model on one set come from :func:`gad.eval.evaluate.evaluate_responses`;
:func:`write_results` writes them all, :func:`read_results` reads them back, and
:func:`gad.eval.report.write_eval_report` renders them.

``results.json``::

    {"format": "gad-eval-results", "version": 1,
     "models": {"gad": {"vicuna80": {"n": 80, "n_reference": 80,
                                     "ngram_f1": {"1": 0.41, ..., "6": 0.05},
                                     "rouge_l": {"value", "low", "high", "n"},
                                     "length": {"n", "mean", "median", "p90", "max", "min"},
                                     "length_unit": "words",
                                     "reference_length": {...},
                                     "distinguishability": {"accuracy", "low", "high", "p_value", "n", "folds"},
                                     "judge": {"score", "low", "high", "n_scored", "n_failed", "per_item",
                                               "model", "failures": [{"id", "reason"}]},   # gad eval
                                     "reference_source": "set" | "judge:<model>" | null,  # gad eval
                                     "n_truncated": 3,     # answers that hit max_new_tokens (gad eval)
                                     # with --teacher-model / --coverage (gad.eval.likelihood), nats per token:
                                     "precision": {"value", "low", "high", "n", "n_tokens", "n_skipped",
                                                   "scorer", "paired": {"<earlier model>": {"value", "low",
                                                                                           "high", "n"}}},
                                     "coverage": {...},    # the same keys
                                     "per_item": {"id": [...], "length": [...], "reference_length": [...],
                                                  "rouge_l": [...], "precision": [...], "coverage": [...]}}}}}

Keys whose metric could not be computed (no references, no judge) are ``null``, and so is NaN.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from gad.errors import UserError
from gad.textfile import read_text

RESULTS_FORMAT = "gad-eval-results"

Results = dict[str, dict[str, dict[str, Any]]]  # model -> set -> metrics


def write_results(results: Results, out_dir: str | os.PathLike) -> Path:
    """Writes ``out_dir/results.json`` (see the module docstring) and returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    payload = {"format": RESULTS_FORMAT, "version": 1, "models": _nan_to_none(results)}
    path.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _nan_to_none(x: Any) -> Any:
    """NaN (e.g. a judge score with nothing scored) becomes null: strict JSON for other tools."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


class ResultsError(UserError, ValueError):
    """A file given as ``results.json`` that is not one."""


def read_results(path: str | os.PathLike) -> Results:
    """The ``models`` mapping of a ``results.json`` written by :func:`write_results`."""
    try:
        data = json.loads(read_text(path, ResultsError))
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT or not isinstance(data.get("models"), dict):
        raise ResultsError(f'{path}: not a gad eval results file (expected "format": "{RESULTS_FORMAT}")')
    return data["models"]
