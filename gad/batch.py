"""The batch that travels between phases: prompts left-padded, responses right-padded.

Layout of ``input_ids`` (B, P + R)::

    [pad pad p p p | r r r EOS pad]     P = widest prompt, R = longest response
                   ^ column P: every response starts here

With every response starting at the same column, log-probs need only the last R + 1 positions
(``logits_to_keep``) and a response's tokens are simply ``input_ids[:, P:]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SeqBatch:
    input_ids: torch.Tensor  # (B, P+R)
    attention_mask: torch.Tensor  # (B, P+R)
    response_mask: torch.Tensor  # (B, R) 1 on real response tokens
    prompt_width: int  # P
    truncated: torch.Tensor  # (B,) bool: the response did not end with EOS

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions that skip the left padding, as ``generate`` uses them."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    @property
    def response_ids(self) -> torch.Tensor:  # (B, R)
        return self.input_ids[:, self.prompt_width :]

    @property
    def response_lengths(self) -> torch.Tensor:  # (B,)
        return self.response_mask.sum(-1)

    @property
    def last_index(self) -> torch.Tensor:
        """Column of each response's final token (EOS, or the last token of a truncated one)."""
        return self.prompt_width + self.response_lengths - 1

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> SeqBatch:
        return SeqBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device),
            self.prompt_width, self.truncated.to(device),
        )

    def rows(self, idx: slice | torch.Tensor) -> SeqBatch:
        """A sub-batch; trims padding columns that became all-empty so micro-batches stay tight."""
        ids, att, resp = self.input_ids[idx], self.attention_mask[idx], self.response_mask[idx]
        left = int((att[:, : self.prompt_width].sum(0) == 0).cumprod(0).sum())  # empty prompt columns
        right = int(resp.sum(-1).max()) if len(resp) else 0
        p = self.prompt_width - left
        return SeqBatch(
            ids[:, left : self.prompt_width + right], att[:, left : self.prompt_width + right],
            resp[:, :right], p, self.truncated[idx],
        )


def pack(prompts: list[list[int]], responses: list[list[int]], pad_id: int, eos_id: int) -> SeqBatch:
    """Build a SeqBatch from token lists (one prompt per response)."""
    assert len(prompts) == len(responses), "one prompt per response"
    P = max(len(p) for p in prompts)
    R = max(1, max(len(r) for r in responses))
    B = len(prompts)
    input_ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, P + R), dtype=torch.long)
    response_mask = torch.zeros((B, R), dtype=torch.long)
    truncated = torch.zeros(B, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if not r:
            raise ValueError("empty response: a response has at least its EOS token")
        input_ids[i, P - len(p) : P] = torch.tensor(p)
        attention_mask[i, P - len(p) : P] = 1
        input_ids[i, P : P + len(r)] = torch.tensor(r)
        attention_mask[i, P : P + len(r)] = 1
        response_mask[i, : len(r)] = 1
        truncated[i] = r[-1] != eos_id
    return SeqBatch(input_ids, attention_mask, response_mask, P, truncated)
