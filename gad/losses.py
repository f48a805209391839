"""The losses of GAD as pure functions: tensors in, ``(loss, metrics)`` out.

No models, no I/O. Every function is unit-tested against hand-computed values in
``tests/test_losses.py``. Shapes: ``G`` groups (prompts), ``N`` samples per group, ``B`` sequences,
``T`` tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Metrics = dict[str, float]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (0 if the mask is empty)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def bradley_terry_loss(
    teacher_scores: torch.Tensor, student_scores: torch.Tensor
) -> tuple[torch.Tensor, Metrics]:
    """Discriminator loss: ``-log σ(D(y_t) - D(y_s))`` averaged over the N pairs of each group.

    The GAD paper's Eq. 3 (Ye et al. 2025, arXiv 2511.10643): the teacher response should score
    above every student sample of the same prompt.

    Args:
        teacher_scores: ``(G,)`` one score per prompt.
        student_scores: ``(G, N)`` scores of the N student samples of each prompt.
    Example: teacher 1.0, samples [0.0, 1.0] → (softplus(-1) + softplus(0)) / 2 = 0.5032.
    """
    margin = teacher_scores.unsqueeze(1) - student_scores  # (G, N)
    loss = F.softplus(-margin).mean()  # -log σ(m) == softplus(-m), stable for large |m|
    return loss, _discriminator_metrics(loss, teacher_scores, student_scores)


def bce_discriminator_loss(
    teacher_scores: torch.Tensor, student_scores: torch.Tensor
) -> tuple[torch.Tensor, Metrics]:
    """The paper's Table 4 alternative: a classifier, teacher = 1 and student = 0, with sigmoid BCE.

    Averaged so that the teacher side and the student side weigh equally, like one pair.
    """
    t_loss = F.binary_cross_entropy_with_logits(teacher_scores, torch.ones_like(teacher_scores))
    s_loss = F.binary_cross_entropy_with_logits(student_scores, torch.zeros_like(student_scores))
    loss = (t_loss + s_loss) / 2
    return loss, _discriminator_metrics(loss, teacher_scores, student_scores)


def _discriminator_metrics(loss: torch.Tensor, teacher_scores: torch.Tensor, student_scores: torch.Tensor) -> Metrics:
    """Accuracy = how often the teacher response outscores a sample of the same prompt."""
    margin = (teacher_scores.unsqueeze(1) - student_scores).detach()
    return {
        "disc/loss": loss.item(),
        "disc/accuracy": (margin > 0).float().mean().item(),
        "disc/margin": margin.mean().item(),
        "disc/teacher_score": teacher_scores.mean().item(),
        "disc/student_score": student_scores.mean().item(),
    }


DISCRIMINATOR_LOSSES = {"bt": bradley_terry_loss, "bce": bce_discriminator_loss}


def group_advantages(rewards: torch.Tensor, scale_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO advantages: ``(r - mean) / (std + eps)`` within each group of N samples of one prompt.

    ``rewards`` is ``(G, N)``; returns ``(G, N)``. The std is the unbiased one (as in GRPO and
    verl). ``scale_by_std=False`` gives Dr. GRPO's ``r - mean`` (Liu et al. 2025).
    Example: [1, 2, 3] → [-1, 0, 1] (std 1).
    """
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale_by_std:
        return centred
    std = rewards.std(dim=1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(centred)
    return centred / (std + eps)


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_ratio: float = 0.2,
    normaliser: float | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """PPO clipped surrogate (Schulman et al. 2017) with token-mean aggregation.

    Args:
        logprobs, old_logprobs, mask: ``(B, T)`` per-token log-probabilities of the sampled tokens
            under the current and the rollout policy; ``mask`` is 1 on response tokens.
        advantages: ``(B,)`` one advantage per sequence, broadcast over its tokens.
        normaliser: the number of tokens to divide by. ``None`` = tokens in this call. Pass the
            token count of the whole mini-batch when accumulating micro-batches, so that the sum of
            the micro-batch losses equals the mini-batch token-mean exactly.
    """
    logratio = logprobs - old_logprobs
    ratio = torch.exp(logratio)
    adv = advantages.unsqueeze(1)  # (B, 1)
    pg_loss1 = -adv * ratio
    pg_loss2 = -adv * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    pg_losses = torch.maximum(pg_loss1, pg_loss2)  # (B, T)
    mask = mask.to(logprobs.dtype)
    denom = mask.sum().clamp(min=1.0) if normaliser is None else normaliser
    loss = (pg_losses * mask).sum() / denom
    with torch.no_grad():
        metrics = {
            "policy/clip_frac": masked_mean((pg_loss2 > pg_loss1).float(), mask).item(),
            "policy/approx_kl_old": masked_mean(-logratio, mask).item(),
            "policy/ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, metrics


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, clamp: float = 0.0) -> torch.Tensor:
    """Per-token low-variance KL estimate ``k3 = exp(q - p) - (q - p) - 1`` of KL(π‖π_ref).

    Schulman, "Approximating KL divergence" (2020). ``p`` = log π, ``q`` = log π_ref, evaluated on
    tokens sampled from π. Always ≥ 0, unbiased. The log-ratio is clamped to ±20 as verl does, so a
    single extreme token cannot produce inf; ``clamp`` > 0 caps each token's value (verl's
    ``low_var_kl``: 10), and a capped token has no gradient.
    """
    log_ratio = torch.clamp(ref_logprobs - logprobs, -20.0, 20.0)
    kl = torch.exp(log_ratio) - log_ratio - 1.0
    return torch.clamp(kl, max=clamp) if clamp > 0 else kl


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, normaliser: float | None = None,
    clamp: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """The KL-to-reference loss term (token-mean of k3, each token's capped at ``clamp`` > 0);
    multiply by ``kl_coef`` (0.001 in the paper)."""
    kl = k3_kl(logprobs, ref_logprobs, clamp)
    mask = mask.to(kl.dtype)
    denom = mask.sum().clamp(min=1.0) if normaliser is None else normaliser
    loss = (kl * mask).sum() / denom
    return loss, {"policy/kl": masked_mean(kl.detach(), mask).item()}


def sft_loss(
    logprobs: torch.Tensor, mask: torch.Tensor, normaliser: float | None = None
) -> tuple[torch.Tensor, Metrics]:
    """Cross-entropy on response tokens only (SeqKD, Kim & Rush 2016): ``-mean log p(y_t)``."""
    mask = mask.to(logprobs.dtype)
    denom = mask.sum().clamp(min=1.0) if normaliser is None else normaliser
    loss = -(logprobs * mask).sum() / denom
    return loss, {"sft/nll": (-(logprobs.detach() * mask).sum() / mask.sum().clamp(min=1.0)).item()}


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[targets]`` per position: ``(B, T, V), (B, T) → (B, T)``.

    Computed through cross-entropy so the full ``(B, T, V)`` log-softmax is never materialised.
    """
    return -F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution per position: ``(B, T, V) → (B, T)``."""
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)
