"""One step of each stage. ``gad_step`` is the algorithm; the rest are the phases it is made of.

Under K processes each works on its own whole prompt groups (``batch`` is this process's share).
Where a phase needs the whole batch it asks ``roles.world``: loss normalisers are global counts
(``world.total``), metrics are reduced over processes (``MetricAverager.result(world)``,
``world.gather``), and ``roles.backward`` turns the processes' averaged gradients into the sum.
In one process all of these are the identity.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from gad import losses
from gad.batch import SeqBatch, pack
from gad.data import Example
from gad.trainer.balance import repetition_stats
from gad.trainer.parallel import World
from gad.trainer.roles import Roles
from gad.trainer.timing import PhaseTimer

Metrics = dict[str, float]


@dataclass
class PromptBatch:
    """The teacher-set examples of one step."""

    examples: list[Example]

    @property
    def prompts(self) -> list[list[int]]:
        return [e.prompt_ids for e in self.examples]

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]


class MetricAverager:
    """Weighted means of micro-batch metrics, so a step logs the batch's value, not the last slice's."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.weights: dict[str, float] = defaultdict(float)

    def add(self, metrics: Metrics, weight: float = 1.0) -> None:
        for k, v in metrics.items():
            self.sums[k] += v * weight
            self.weights[k] += weight

    def result(self, world: World | None = None) -> Metrics:
        """The means; with ``world``, over every process's micro-batches (a collective)."""
        if world is not None:
            return world.mean_metrics(self.sums, self.weights)
        return {k: self.sums[k] / max(self.weights[k], 1e-12) for k in self.sums}


# --------------------------------------------------------------------------------------------
# The GAD step (Ye et al. 2025, Algorithm 1).
# --------------------------------------------------------------------------------------------


def gad_step(batch: PromptBatch, roles: Roles, timer: PhaseTimer, update_discriminator: bool = True,
             log: list[dict[str, Any]] | None = None) -> Metrics:
    """rollout → score with D and update D from the same pass → group advantages → update G.

    Algorithm 1's order with D's update moved next to the scoring: the teacher response and the N
    samples of each prompt go through D in one forward pass whose detached scores are the rewards
    (D before its update, as the algorithm reads) and whose graph gives D's Bradley-Terry loss,
    which saves a second scoring pass. The advantages use only those detached rewards, so updating
    D before computing them changes nothing.

    ``update_discriminator=False`` keeps D fixed: the off-policy baseline, and the frozen-D ablation.
    ``log``: a list that receives a few prompts' samples with their scores (``samples.jsonl``).
    """
    cfg = roles.cfg
    n = cfg.rollout.n

    # 1. Rollout: N samples per prompt from the current policy.
    with timer.phase("rollout"):
        samples = roles.rollout.generate(batch.prompts, n)  # n_groups*N token lists, grouped by prompt
    timer.count("rollout", sum(len(s) for s in samples))

    # 2. Score teacher + samples with D (rewards = the samples' scores before D's update), and update
    #    D with Bradley-Terry from the same forward pass.
    scores, d_metrics = discriminator_phase(roles, batch, samples, timer, update=update_discriminator)
    rewards = scores[:, 1:]  # (n_groups, N); column 0 is the teacher response's score

    # 3. Group advantages (GRPO): (r - mean) / std within each prompt's N samples.
    advantages = losses.group_advantages(rewards, scale_by_std=cfg.algorithm.scale_adv_by_std)  # (n_groups, N)

    # 4. Policy update: PPO-clip surrogate + KL to the initial policy.
    seqs = pack([p for p in batch.prompts for _ in range(n)], samples, roles.pad_id, roles.eos_id)
    g_metrics = policy_phase(roles, seqs, advantages.flatten(), timer)
    if log is not None:
        log.extend(sample_records(roles, batch, samples, scores, advantages))

    all_rewards = roles.world.gather(rewards)  # (every process's groups, N)
    return {
        **d_metrics, **g_metrics,
        "reward/mean": all_rewards.mean().item(),
        "reward/std": all_rewards.std().item() if all_rewards.numel() > 1 else 0.0,
        "reward/group_std": all_rewards.std(dim=1).mean().item(),
        **response_stats(samples, roles.eos_id, roles.world),
        **sample_repetition(batch, samples, roles.world),
    }


def warmup_step(batch: PromptBatch, roles: Roles, timer: PhaseTimer, train_generator: bool,
                log: list[dict[str, Any]] | None = None) -> Metrics:
    """The paper's warmup: G learns the teacher responses by cross-entropy, D learns Bradley-Terry
    on (teacher, student samples). ``gad offpolicy`` pre-trains its D with ``train_generator=False``."""
    n = roles.cfg.rollout.n
    with timer.phase("rollout"):
        samples = roles.rollout.generate(batch.prompts, n)
    timer.count("rollout", sum(len(s) for s in samples))
    scores, metrics = discriminator_phase(roles, batch, samples, timer, update=True)
    if log is not None:
        log.extend(sample_records(roles, batch, samples, scores))
    if train_generator:
        metrics.update(sft_phase(roles, batch, timer))
    return {**metrics, **response_stats(samples, roles.eos_id, roles.world), **sample_repetition(batch, samples, roles.world)}


def seqkd_step(batch: PromptBatch, roles: Roles, timer: PhaseTimer) -> Metrics:
    """SeqKD (Kim & Rush 2016): supervised fine-tuning on the teacher's responses."""
    return sft_phase(roles, batch, timer)


# --------------------------------------------------------------------------------------------
# Phases.
# --------------------------------------------------------------------------------------------


def sequence_logprobs(
    model: Any, seqs: SeqBatch, with_entropy: bool = False, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs of the response tokens, ``(B, R)``; optionally the entropies, detached.

    ``temperature``: the sampling temperature, so the log-probs are those of the distribution the
    samples came from (as verl and TRL compute them); ``generator.sft_temperature`` (1 by default)
    for teacher-forced cross-entropy.
    """
    R = seqs.response_ids.shape[1]
    logits = model(
        input_ids=seqs.input_ids, attention_mask=seqs.attention_mask, position_ids=seqs.position_ids,
        logits_to_keep=R + 1, use_cache=False,  # one pass, no decoding: a KV cache would be built for nothing
    ).logits[:, :-1].float()  # (B, R, V): position P-1+t predicts response token t; fp32 from bf16 logits
    if temperature != 1.0:
        logits = logits / temperature
    logprobs = losses.token_logprobs(logits, seqs.response_ids)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = losses.token_entropy(logits.detach())
    return logprobs, entropy


def _micro_slices(total: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, total)) for i in range(0, total, size)]


def discriminator_phase(
    roles: Roles, batch: PromptBatch, samples: list[list[int]], timer: PhaseTimer, update: bool
) -> tuple[torch.Tensor, Metrics]:
    """Score ``[teacher, sample_1..N]`` per prompt: ``(n_groups, 1 + N)``, the teacher's first; the
    samples' scores are the rewards.

    With ``update``, the Bradley-Terry (or BCE) loss is back-propagated through the same forward
    and D takes one optimizer step. Micro-batches hold whole groups so each pair stays together.
    """
    cfg, D = roles.cfg, roles.discriminator
    n, n_groups = cfg.rollout.n, len(batch.examples)
    all_groups = n_groups * roles.world.size  # every process holds the same number of groups
    loss_fn = losses.DISCRIMINATOR_LOSSES[cfg.discriminator.loss]
    groups_per_micro = max(1, cfg.train.micro_batch_size // (n + 1))
    all_scores = torch.zeros(n_groups, n + 1)
    avg = MetricAverager()
    D.train(update)
    truncated = 0
    micro_slices = _micro_slices(n_groups, groups_per_micro)
    for sl in micro_slices:
        exs = batch.examples[sl]
        prompts, responses = [], []
        for g, ex in zip(range(sl.start, sl.stop), exs):
            prompts += [ex.prompt_ids] * (n + 1)
            responses += [ex.response_ids] + samples[g * n : (g + 1) * n]
        seqs = pack(prompts, responses, roles.pad_id, roles.eos_id).to(roles.device)
        truncated += int(seqs.truncated.view(len(exs), n + 1)[:, 1:].sum())
        with timer.phase("score"), torch.set_grad_enabled(update), roles.autocast():
            scores = D(seqs.input_ids, seqs.attention_mask, seqs.position_ids, seqs.last_index)
            scores = scores.float().view(len(exs), n + 1)  # (g, 1 + N): teacher first
            loss, m = loss_fn(scores[:, 0], scores[:, 1:])
        timer.count("score", int(seqs.attention_mask.sum()))
        all_scores[sl] = scores.detach().cpu()
        avg.add(m, weight=len(exs))
        if update:
            with timer.phase("disc_update"):
                roles.backward(loss * len(exs) / all_groups, "disc", last=sl == micro_slices[-1])
    metrics = avg.result(roles.world)
    metrics["disc/truncated_samples"] = roles.world.total(truncated)
    if update:
        with timer.phase("disc_update"):
            metrics.update(roles.step_optimizer("disc", metrics["disc/loss"]))
    return all_scores, metrics


def policy_phase(roles: Roles, seqs: SeqBatch, advantages: torch.Tensor, timer: PhaseTimer) -> Metrics:
    """PPO-clip on the samples with their group advantages, plus ``kl_coef`` × k3 KL to the reference."""
    cfg = roles.cfg
    generator, n = roles.generator, cfg.rollout.n
    B = len(seqs)
    micro = cfg.train.micro_batch_size
    mini = cfg.mini_batch_size * n // roles.world.size  # this process's sequences per optimizer step
    use_kl = cfg.algorithm.kl_coef > 0
    temp = cfg.rollout.temperature
    one_update = cfg.algorithm.ppo_epochs == 1 and mini >= B

    # Log-probs that stay fixed during the update: the reference's, and the rollout policy's. With a
    # single update per step the rollout policy *is* the current one (ratio = 1), so its log-probs
    # are the detached current ones and that forward pass is skipped.
    ref_lp: list[torch.Tensor] = []
    old_lp: list[torch.Tensor] = []
    with torch.no_grad(), roles.autocast():
        for sl in _micro_slices(B, micro):
            mb = seqs.rows(sl).to(roles.device)
            if use_kl:
                with timer.phase("reference"):
                    ref_lp.append(sequence_logprobs(roles.reference, mb, temperature=temp)[0])
            if not one_update:
                with timer.phase("old_logprobs"):
                    old_lp.append(sequence_logprobs(generator, mb, temperature=temp)[0])

    avg = MetricAverager()
    generator.train()
    for _ in range(cfg.algorithm.ppo_epochs):
        for mini_sl in _micro_slices(B, mini):
            mini_tokens = roles.world.total(float(seqs.response_mask[mini_sl].sum()))  # all processes' tokens
            in_mini = _micro_slices(B, micro)[mini_sl.start // micro : math.ceil(mini_sl.stop / micro)]
            for sl in in_mini:
                i = sl.start // micro
                mb = seqs.rows(sl).to(roles.device)
                with timer.phase("policy_update"), roles.autocast():
                    lp, ent = sequence_logprobs(generator, mb, with_entropy=True, temperature=temp)
                    old = old_lp[i] if old_lp else lp.detach()
                    mask = mb.response_mask
                    loss, m = losses.clipped_policy_loss(
                        lp, old, advantages[sl].to(lp.device), mask, cfg.algorithm.clip_ratio, normaliser=mini_tokens
                    )
                    if use_kl:
                        kl_loss, km = losses.kl_penalty(lp, ref_lp[i], mask, normaliser=mini_tokens, clamp=cfg.algorithm.kl_clamp)
                        loss = loss + cfg.algorithm.kl_coef * kl_loss
                        m.update(km)
                    roles.backward(loss, "gen", last=sl == in_mini[-1])
                tokens = float(mask.sum())
                m["policy/entropy"] = losses.masked_mean(ent, mask).item()
                m["policy/loss"] = loss.item() * mini_tokens / max(tokens, 1.0)  # per-token, this slice
                avg.add(m, weight=tokens)
                timer.count("policy_update", int(mb.attention_mask.sum()))
            with timer.phase("policy_update"):
                avg.add(roles.step_optimizer("gen", avg.result()["policy/loss"]))
    return avg.result(roles.world)


def sft_phase(roles: Roles, batch: PromptBatch, timer: PhaseTimer) -> Metrics:
    """Token-mean cross-entropy on the teacher responses (EOS included), one optimizer step."""
    seqs = pack(batch.prompts, [e.response_ids for e in batch.examples], roles.pad_id, roles.eos_id)
    total = roles.world.total(float(seqs.response_mask.sum()))  # all processes' response tokens
    avg = MetricAverager()
    roles.generator.train()
    micro_slices = _micro_slices(len(seqs), roles.cfg.train.micro_batch_size)
    for sl in micro_slices:
        mb = seqs.rows(sl).to(roles.device)
        with timer.phase("sft_update"), roles.autocast():
            lp, _ = sequence_logprobs(roles.generator, mb, temperature=roles.cfg.generator.sft_temperature)
            loss, m = losses.sft_loss(lp, mb.response_mask, normaliser=total)
            roles.backward(loss, "gen", last=sl == micro_slices[-1])
        avg.add(m, weight=float(mb.response_mask.sum()))
        timer.count("sft_update", int(mb.attention_mask.sum()))
    metrics = avg.result(roles.world)
    with timer.phase("sft_update"):
        metrics.update(roles.step_optimizer("gen", metrics["sft/nll"]))
    return metrics


def sample_records(
    roles: Roles, batch: PromptBatch, samples: list[list[int]], scores: torch.Tensor,
    advantages: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """The first ``train.log_samples`` prompts of this process's batch: the teacher's response and
    the student's samples as text, with D's scores (a sample's is its reward), the advantages when
    there are any, lengths, and where D ranks the teacher among them (1 = above every sample)."""
    n, tok, eos = roles.cfg.rollout.n, roles.tokenizer, roles.eos_id
    records = []
    for g, ex in enumerate(batch.examples[: roles.cfg.train.log_samples]):
        teacher_score = float(scores[g, 0])
        group = samples[g * n : (g + 1) * n]
        records.append({
            "id": ex.id,
            "teacher": tok.decode(ex.response_ids, skip_special_tokens=True),
            "teacher_score": teacher_score,
            "teacher_rank": 1 + sum(float(r) > teacher_score for r in scores[g, 1:]),
            "samples": [{
                "text": tok.decode(s, skip_special_tokens=True), "reward": float(scores[g, 1 + j]),
                "advantage": None if advantages is None else float(advantages[g, j]), "length": len(s),
                "ended": bool(s) and s[-1] == eos,
            } for j, s in enumerate(group)],
        })
    return records


def sample_repetition(batch: PromptBatch, samples: list[list[int]], world: World) -> Metrics:
    """:func:`gad.trainer.balance.repetition_stats` of the step's samples and teacher responses, all
    processes' together (the balance monitor reads them)."""
    parts = world.gather_objects((samples, [e.response_ids for e in batch.examples]))
    return repetition_stats([s for p in parts for s in p[0]], [t for p in parts for t in p[1]])


def response_stats(samples: list[list[int]], eos_id: int, world: World | None = None) -> Metrics:
    """Length and truncation of the step's samples (every process's, with ``world``)."""
    stats = torch.tensor([[len(s), float(not s or s[-1] != eos_id)] for s in samples], dtype=torch.float)
    if world is not None:
        stats = world.gather(stats)
    return {
        "gen/response_length_mean": stats[:, 0].mean().item(),
        "gen/response_length_max": stats[:, 0].max().item(),
        "gen/truncation_rate": stats[:, 1].mean().item(),
    }
