"""Evaluation: sets, student generation, metrics, the LLM judge, reports and the human-evaluation page.

Modules (each cheap to import; numpy, scikit-learn and matplotlib are imported where used):

- :mod:`gad.eval.sets` — :class:`EvalItem` and loaders for teacher sets and the public sets.
- :mod:`gad.eval.metrics` — n-gram F1, ROUGE-L, lengths, bootstrap/Wilson intervals, judge aggregation.
- :mod:`gad.distinguish` — the classifier two-sample test (TF-IDF + logistic regression).
- :mod:`gad.eval.generations` — the ``generations.jsonl`` cache format of a model's responses.
- :mod:`gad.eval.evaluate` — answers → metrics (:func:`evaluate_responses`), over a set and its cached
  generations; what is left to generate.
- :mod:`gad.eval.results` — ``{model: {set: metrics}}`` and ``results.json``.
- :mod:`gad.eval.report` — the results rendered: ``report.md`` and its plots.
- :mod:`gad.eval.names` — folder- and file-safe names for what ``gad eval`` writes.
- :mod:`gad.eval.humaneval` — the blind pairwise comparison page and the scoring of its exports.
- :mod:`gad.eval.generate` — the student's answers, batched, through :class:`gad.rollout.HFRollout`.
- :mod:`gad.eval.judge` — the LLM judge (reference answer, pairwise scores in both orders) over
  the resumable client of ``gad teacher``.
- :mod:`gad.eval.likelihood` — precision and coverage: per-token log-likelihoods of answers under a
  local teacher (with its hidden context) and under the students, their intervals and paired differences.
- :mod:`gad.eval.run` — :func:`run_eval`, everything ``gad eval`` does.
"""
