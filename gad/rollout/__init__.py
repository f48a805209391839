"""Rollout: sampling the student's responses, behind a small interface.

Contract of a rollout engine: ``generate(prompts, n) -> list of n * len(prompts) token lists``,
grouped by prompt (all samples of prompt 0 first), each ending with EOS unless it hit the token
budget. Only token ids cross this boundary: log-probs are always recomputed by the training model,
so the engines are interchangeable without touching the step:

- :class:`HFRollout` (:mod:`gad.rollout.hf`): ``transformers.generate`` on the live training model.
- :class:`VLLMRollout` (:mod:`gad.rollout.vllm_engine`): a vLLM engine in the training process,
  given the policy's weights in memory after every generator update (``rollout.engine: vllm``).
- :class:`VLLMServerRollout` (:mod:`gad.rollout.vllm_server`): a separate vLLM server, weights
  pushed to it after every update.
- :class:`ReplayRollout`: responses fixed in advance (exact comparisons across engines and process counts).
"""

from __future__ import annotations

from typing import Protocol

from gad.rollout.hf import HFRollout, cut_at_eos


class RolloutEngine(Protocol):
    def generate(self, prompts: list[list[int]], n: int) -> list[list[int]]: ...


class ReplayRollout:
    """Responses fixed in advance, looked up by prompt: the same samples under any engine, process
    count or batch split, so such runs can be compared exactly (tests, debugging a step).

    ``table`` maps a prompt's token ids to its responses; ``generate(prompts, n)`` returns the first
    ``n`` of each prompt's, grouped by prompt as every engine does.
    """

    def __init__(self, table: dict[tuple[int, ...], list[list[int]]]):
        self.table = table

    def generate(self, prompts: list[list[int]], n: int) -> list[list[int]]:
        out = []
        for p in prompts:
            responses = self.table.get(tuple(p))
            if responses is None or len(responses) < n:
                raise KeyError(f"no {n} recorded responses for a prompt of {len(p)} tokens")
            out += [list(r) for r in responses[:n]]
        return out


__all__ = ["HFRollout", "ReplayRollout", "RolloutEngine", "cut_at_eos"]
