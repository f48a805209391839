"""The paper's toy experiment (Fig. 5): GAD is mode-seeking, SeqKD is mode-covering.

The teacher is a mixture of discretised Gaussians over the classes ``0..K-1``; the student is a
single discretised Gaussian, ``p(k) = softmax_k(-(k - μ)² / 2σ²)``, with a learnable mean ``μ`` and
log-std ``log σ``. Both students start from the same initialisation and see teacher samples only
(black box):

- **SeqKD** maximises the likelihood of teacher samples, i.e. minimises forward KL(teacher‖student):
  a single Gaussian then spreads over all the modes (mode-covering).
- **GAD** samples classes from the student, scores them with a discriminator (one learned score per
  class), turns the scores into GRPO group-normalised advantages and takes a policy-gradient step;
  the discriminator takes a Bradley-Terry step on (teacher sample, N student samples) pairs. The
  generator ends up maximising roughly ``E_student[log p_t - log p_s]``, i.e. minimising reverse
  KL(student‖teacher): its stable points are the reverse-KL local optima, one per mode
  (mode-seeking) and, for a single Gaussian, also a wide one bridging the modes that it keeps from a
  start in its basin (``init_sweep``; docs/claims.md).

The losses are the package's own (``gad.losses``), the same functions the LLM trainer uses: a toy
"sequence" is one token long, so the clipped policy loss with ``old_logprobs = logprobs.detach()``
is exactly REINFORCE with the group-normalised advantage.

Python API::

    from gad.toy import ToyConfig, run_toy
    results = run_toy(ToyConfig(out_dir="runs/toy", seed=0))
    results["methods"]["gad"]["reverse_kl"]
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from gad.losses import bradley_terry_loss, clipped_policy_loss, group_advantages, sft_loss
from gad.plots import figure


@dataclass
class ToyConfig:
    """Everything the toy run needs. Defaults reproduce ``docs/claims.md``."""

    out_dir: str | None = "runs/toy"
    """Where ``toy.json`` and ``toy.png`` go; ``None`` writes nothing (tests, notebooks)."""
    seed: int = 0
    """Seeds the teacher set, both students' sampling and the discriminator."""
    num_classes: int = 20
    """K, the number of classes (the toy's "vocabulary")."""
    mode_means: tuple[float, ...] = (5.0, 14.0)
    """Centres of the teacher's Gaussian components, in class units. Keep them several stds apart:
    with overlapping modes the reverse-KL optimum is itself a wide Gaussian and there is nothing to
    seek."""
    mode_stds: tuple[float, ...] = (1.2, 1.2)
    """Std of each teacher component, in class units."""
    mode_weights: tuple[float, ...] = (0.6, 0.4)
    """Mixture weights (normalised internally). Unequal, so that there is a main mode."""
    teacher_set_size: int = 4096
    """Teacher samples drawn once before training: the black-box teacher set both methods read."""
    init_mean: float = 3.0
    """Both students' initial μ. The default sits inside the main mode's basin of attraction for
    reverse KL (see ``init_sweep``): from a centred, wide start the reverse-KL flow of a single
    Gaussian ends in a *bridging* local optimum instead (docs/claims.md)."""
    init_std: float = 1.0
    """Both students' initial σ, in class units."""
    steps: int = 400
    """Optimiser steps for each method."""
    student_lr: float = 0.05
    """Adam learning rate of the student's μ and log σ (both methods)."""
    seqkd_batch_size: int = 64
    """Teacher samples per SeqKD step."""
    groups: int = 16
    """Groups ("prompts") per GAD step, each with one teacher sample and N student samples."""
    group_size: int = 8
    """N: student samples per group; the advantage is normalised within each group (GRPO)."""
    discriminator: str = "table"
    """``"table"``: one free score per class (the unrestricted discriminator of GAN theory);
    ``"mlp"``: a tiny MLP on the class position, so nearby classes get similar scores. The MLP's
    smoothness leaks the other mode's high scores into the student's tail and drags the student off
    its mode: the toy needs a discriminator that is accurate where the student samples."""
    disc_hidden: int = 32
    """Hidden width of the ``"mlp"`` discriminator."""
    disc_optimizer: str = "sgd"
    """``"sgd"`` or ``"adam"``. With a per-class table, SGD moves each score in proportion to how
    often its class is sampled; Adam gives a rarely seen class a full-size step from one sample,
    which makes the rewards noisy enough to knock the student off its mode."""
    disc_lr: float = 20.0
    """Discriminator learning rate. Large because per-class BT gradients are ~frequency/2 (< 0.1):
    the discriminator must track the student faster than the student moves (two time-scales).
    20 and 50 give the same result; at 5 it lags and 1 seed in 5 leaves the mode (docs/claims.md)."""
    disc_steps: int = 1
    """Discriminator updates per generator update."""
    scale_adv_by_std: bool = True
    """GRPO's ``(r - mean) / std`` (True) or Dr. GRPO's ``r - mean`` (False)."""
    min_std: float = 0.5
    """Floor on the student's σ: a collapsed student would sample one class only, every group would
    have zero advantage and training would stop for good."""
    init_sweep: tuple[float, ...] = ()
    """Optional extra GAD runs, one per initial μ listed here (same σ, seed and settings), reported
    under ``init_sweep`` in toy.json: where does GAD end up from each start?"""
    plot: bool = True
    """Write ``toy.png`` (needs matplotlib) when ``out_dir`` is set."""

    def __post_init__(self) -> None:
        n = len(self.mode_means)
        if n == 0 or len(self.mode_stds) != n or len(self.mode_weights) != n:
            raise ValueError(
                f"mode_means, mode_stds and mode_weights must have the same non-zero length "
                f"(got {len(self.mode_means)}, {len(self.mode_stds)}, {len(self.mode_weights)})"
            )
        if any(w <= 0 for w in self.mode_weights):
            raise ValueError(f"mode_weights must be positive, got {self.mode_weights}")
        if any(s <= 0 for s in self.mode_stds):
            raise ValueError(f"mode_stds must be positive, got {self.mode_stds}")
        if self.num_classes < 3:
            raise ValueError(f"num_classes must be at least 3, got {self.num_classes}")
        if any(not 0 <= m <= self.num_classes - 1 for m in self.mode_means):
            raise ValueError(
                f"mode_means {self.mode_means} must lie in [0, num_classes - 1 = {self.num_classes - 1}]; "
                "raise num_classes or move the modes"
            )
        if self.group_size < 2:
            raise ValueError("group_size must be at least 2: the advantage is normalised within a group")
        for name in ("steps", "groups", "seqkd_batch_size", "teacher_set_size", "disc_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.disc_optimizer not in ("sgd", "adam"):
            raise ValueError(f"disc_optimizer must be 'sgd' or 'adam', got {self.disc_optimizer!r}")
        if self.discriminator not in ("mlp", "table"):
            raise ValueError(f"discriminator must be 'mlp' or 'table', got {self.discriminator!r}")
        if self.init_std <= self.min_std:
            raise ValueError(f"init_std ({self.init_std}) must exceed min_std ({self.min_std})")


# ---------------------------------------------------------------------------------------------
# Distributions over classes
# ---------------------------------------------------------------------------------------------


def discretised_gaussian_logits(mean: torch.Tensor, std: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Log-density of N(mean, std²) at each class centre: ``(K,)`` logits; softmax gives the pmf."""
    k = torch.arange(num_classes, dtype=torch.float64)
    return -0.5 * ((k - mean) / std) ** 2 - torch.log(std)


def teacher_probs(cfg: ToyConfig) -> torch.Tensor:
    """The teacher's pmf ``(K,)``: each component discretised (softmax over classes), then mixed."""
    w = torch.tensor(cfg.mode_weights, dtype=torch.float64)
    w = w / w.sum()
    comps = torch.stack(
        [
            torch.softmax(
                discretised_gaussian_logits(
                    torch.tensor(m, dtype=torch.float64),
                    torch.tensor(s, dtype=torch.float64),
                    cfg.num_classes,
                ),
                dim=0,
            )
            for m, s in zip(cfg.mode_means, cfg.mode_stds)
        ]
    )  # (M, K)
    return (w.unsqueeze(1) * comps).sum(0)


class GaussianStudent(torch.nn.Module):
    """A single discretised Gaussian with learnable ``mean`` and ``log_std``."""

    def __init__(self, num_classes: int, init_mean: float, init_std: float, min_std: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.min_std = min_std
        self.mean = torch.nn.Parameter(torch.tensor(float(init_mean), dtype=torch.float64))
        self.log_std = torch.nn.Parameter(torch.tensor(math.log(init_std), dtype=torch.float64))

    def std(self) -> torch.Tensor:
        return self.log_std.exp().clamp(min=self.min_std)

    def log_probs(self) -> torch.Tensor:
        """``(K,)`` log-pmf over classes."""
        return torch.log_softmax(discretised_gaussian_logits(self.mean, self.std(), self.num_classes), dim=0)


class ToyDiscriminator(torch.nn.Module):
    """Scores every class: ``forward() -> (K,)``; a sample's score is ``scores[class]``."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        K = cfg.num_classes
        self.kind = cfg.discriminator
        if self.kind == "table":
            self.table = torch.nn.Parameter(torch.zeros(K, dtype=torch.float64))
        else:
            # Input: the class position scaled to [-1, 1] (a fixed, smooth "embedding").
            self.register_buffer("x", torch.linspace(-1.0, 1.0, K, dtype=torch.float64).unsqueeze(1))
            with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
                torch.manual_seed(cfg.seed)
                self.mlp = torch.nn.Sequential(
                    torch.nn.Linear(1, cfg.disc_hidden), torch.nn.Tanh(), torch.nn.Linear(cfg.disc_hidden, 1)
                ).double()

    def forward(self) -> torch.Tensor:
        return self.table if self.kind == "table" else self.mlp(self.x).squeeze(1)  # (K,)


# ---------------------------------------------------------------------------------------------
# The two methods
# ---------------------------------------------------------------------------------------------


def train_seqkd(
    cfg: ToyConfig, teacher_set: torch.Tensor, gen: torch.Generator
) -> tuple[GaussianStudent, list[dict]]:
    """Maximum likelihood on teacher samples (``gad.losses.sft_loss`` on one-token sequences)."""
    student = _new_student(cfg)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.student_lr)
    history = []
    for step in range(cfg.steps):
        idx = torch.randint(len(teacher_set), (cfg.seqkd_batch_size,), generator=gen)
        y = teacher_set[idx]  # (B,)
        logprobs = student.log_probs()[y].unsqueeze(1)  # (B, 1): a one-token response
        loss, metrics = sft_loss(logprobs, torch.ones_like(logprobs))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({"step": step, **metrics, **_student_metrics(student)})
    return student, history


def train_gad(
    cfg: ToyConfig, teacher_set: torch.Tensor, gen: torch.Generator
) -> tuple[GaussianStudent, torch.Tensor, list[dict]]:
    """GAD: rollout → score and update D (Bradley-Terry) → advantages → update G (policy gradient).

    Returns the student, the discriminator's final per-class scores ``(K,)`` and per-step metrics.
    """
    student = _new_student(cfg)
    disc = ToyDiscriminator(cfg)
    opt_g = torch.optim.Adam(student.parameters(), lr=cfg.student_lr)
    opt_cls = torch.optim.SGD if cfg.disc_optimizer == "sgd" else torch.optim.Adam
    opt_d = opt_cls(disc.parameters(), lr=cfg.disc_lr)
    n_groups, N = cfg.groups, cfg.group_size
    history = []
    for step in range(cfg.steps):
        # 1. rollout: N student samples for each of the n_groups "prompts", and one teacher sample each.
        with torch.no_grad():
            probs = student.log_probs().exp()
        y_s = torch.multinomial(probs.expand(n_groups, -1), N, replacement=True, generator=gen)  # (n_groups, N)
        y_t = teacher_set[torch.randint(len(teacher_set), (n_groups,), generator=gen)]  # (n_groups,)

        # 2. score and update D: one discriminator "forward" gives both the rewards (detached) and the
        #    Bradley-Terry loss. The rewards are taken before D's step, as in the LLM trainer.
        scores = disc()  # D(k) for every class, (K,)
        rewards = scores[y_s].detach()  # (n_groups, N)
        for i in range(cfg.disc_steps):
            scores = scores if i == 0 else disc()
            d_loss, d_metrics = bradley_terry_loss(scores[y_t], scores[y_s])
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()

        # 3. advantages: GRPO's group normalisation over the N samples of each prompt.
        adv = group_advantages(rewards, scale_by_std=cfg.scale_adv_by_std)  # (n_groups, N)

        # 4. update G: one token per sequence and one step per rollout, so the clipped loss with
        #    old = current (detached) is REINFORCE: -mean(A · log π(y)).
        logprobs = student.log_probs()[y_s].reshape(n_groups * N, 1)  # (B, T=1)
        pg_loss, pg_metrics = clipped_policy_loss(
            logprobs, logprobs.detach(), adv.reshape(n_groups * N), torch.ones_like(logprobs)
        )
        opt_g.zero_grad()
        pg_loss.backward()
        opt_g.step()

        history.append(
            {
                "step": step,
                "policy/loss": pg_loss.item(),
                "reward/mean": rewards.mean().item(),
                **d_metrics,
                **_student_metrics(student),
            }
        )
    with torch.no_grad():
        return student, disc(), history


def _new_student(cfg: ToyConfig) -> GaussianStudent:
    return GaussianStudent(cfg.num_classes, cfg.init_mean, cfg.init_std, cfg.min_std)


def _student_metrics(student: GaussianStudent) -> dict[str, float]:
    return {"student/mu": student.mean.item(), "student/sigma": student.std().item()}


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def distribution_stats(p: torch.Tensor, p_teacher: torch.Tensor, cfg: ToyConfig) -> dict[str, Any]:
    """Mean, std, mode masses and both KLs of the pmf ``p`` ``(K,)`` against the teacher's."""
    k = torch.arange(cfg.num_classes, dtype=torch.float64)
    mean = (p * k).sum()
    std = ((p * (k - mean) ** 2).sum()).sqrt()
    near = [(k - m).abs() <= 1.0 for m in cfg.mode_means]  # classes within one class of each mode
    near_any = torch.stack(near).any(0)
    main = max(range(len(cfg.mode_means)), key=lambda i: cfg.mode_weights[i])
    return {
        "mean": mean.item(),
        "std": std.item(),
        "mass_near_modes": p[near_any].sum().item(),
        "mass_near_main_mode": p[near[main]].sum().item(),
        "mass_near_each_mode": [p[m].sum().item() for m in near],
        "forward_kl": _kl(p_teacher, p),
        "reverse_kl": _kl(p, p_teacher),
        "probs": p.tolist(),
    }


def best_single_gaussian(
    cfg: ToyConfig, p_teacher: torch.Tensor, direction: str, init_mean: float, init_std: float
) -> GaussianStudent:
    """The single Gaussian minimising the *exact* forward or reverse KL, by full-batch gradient
    descent from ``(init_mean, init_std)``: the reference point each method should approach."""
    student = GaussianStudent(cfg.num_classes, init_mean, init_std, cfg.min_std)
    opt = torch.optim.Adam(student.parameters(), lr=0.1)
    for _ in range(600):
        logq = student.log_probs()
        logp = p_teacher.clamp_min(1e-300).log()
        kl = (
            (p_teacher * (logp - logq)).sum()
            if direction == "forward"
            else (logq.exp() * (logq - logp)).sum()
        )
        opt.zero_grad()
        kl.backward()
        opt.step()
    return student


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(p‖q) in nats, exact over the K classes (0 · log 0 = 0)."""
    terms = torch.where(
        p > 0, p * (p.clamp_min(1e-300).log() - q.clamp_min(1e-300).log()), torch.zeros_like(p)
    )
    return terms.sum().item()


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def run_toy(cfg: ToyConfig) -> dict[str, Any]:
    """Train SeqKD and GAD students on the same teacher set; measure; write ``toy.json``/``toy.png``.

    Returns the dict written to ``toy.json``: ``config``, ``teacher`` and ``methods`` (``seqkd``,
    ``gad``), each with ``mean``, ``std``, ``mass_near_modes``, ``mass_near_main_mode``,
    ``mass_near_each_mode``, ``forward_kl``, ``reverse_kl``, ``probs`` (the pmf), plus the fitted
    ``mu``/``sigma`` parameters; ``init`` measures the common starting point, ``init_sweep`` the
    optional extra GAD runs, ``history`` every ~2% of steps; ``seconds`` is the wall time.
    """
    t0 = time.perf_counter()
    p_teacher = teacher_probs(cfg)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    teacher_set = torch.multinomial(p_teacher, cfg.teacher_set_size, replacement=True, generator=data_gen)

    # Each method gets its own sampling stream, so changing one cannot change the other's run.
    seqkd, seqkd_hist = train_seqkd(cfg, teacher_set, torch.Generator().manual_seed(cfg.seed + 1))
    gad, disc_scores, gad_hist = train_gad(cfg, teacher_set, torch.Generator().manual_seed(cfg.seed + 2))

    def measure(student: GaussianStudent) -> dict[str, Any]:
        with torch.no_grad():
            stats = distribution_stats(student.log_probs().exp(), p_teacher, cfg)
        return {"mu": student.mean.item(), "sigma": student.std().item(), **stats}

    sweep = []
    for init_mean in cfg.init_sweep:
        sweep_cfg = replace(cfg, init_mean=float(init_mean), init_sweep=())
        student, _, _ = train_gad(sweep_cfg, teacher_set, torch.Generator().manual_seed(cfg.seed + 2))
        flow = measure(best_single_gaussian(cfg, p_teacher, "reverse", float(init_mean), cfg.init_std))
        sweep.append(
            {
                "init_mean": float(init_mean),
                **{k: v for k, v in measure(student).items() if k != "probs"},
                # where exact reverse-KL descent from the same start ends, for comparison
                "reverse_kl_descent": {k: flow[k] for k in ("mean", "std", "reverse_kl")},
            }
        )

    # Where exact optimisation of each divergence lands: forward KL has one optimum (from the
    # centre); reverse KL has one local optimum per mode (each started on its mode).
    centre, spread = (cfg.num_classes - 1) / 2, (cfg.num_classes - 1) / 4
    reference = {
        "forward_kl_optimum": measure(best_single_gaussian(cfg, p_teacher, "forward", centre, spread))
    }
    for i, m in enumerate(cfg.mode_means):
        opt_i = measure(best_single_gaussian(cfg, p_teacher, "reverse", m, cfg.mode_stds[i]))
        reference[f"reverse_kl_optimum_mode_{i}"] = opt_i

    results = {
        "config": asdict(cfg),
        "teacher": distribution_stats(p_teacher, p_teacher, cfg),
        "init": measure(_new_student(cfg)),
        "methods": {"seqkd": measure(seqkd), "gad": measure(gad)},
        "reference": {k: {kk: vv for kk, vv in v.items() if kk != "probs"} for k, v in reference.items()},
        "init_sweep": sweep,
        "discriminator_scores": disc_scores.tolist(),
        "history": {
            "seqkd": seqkd_hist[:: max(1, cfg.steps // 50)],
            "gad": gad_hist[:: max(1, cfg.steps // 50)],
        },
    }
    results["seconds"] = time.perf_counter() - t0
    if cfg.out_dir is not None:
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if cfg.plot:
            plot_toy(results, out / "toy.png")
            if sweep:
                plot_init_sweep(results, out / "toy_init_sweep.png")
        results["seconds"] = time.perf_counter() - t0
        (out / "toy.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def plot_toy(results: dict[str, Any], path: Path) -> None:
    """The paper's Fig. 5 layout: teacher, SeqKD and GAD pmfs side by side, teacher outlined on each."""
    p_t = results["teacher"]["probs"]
    k = list(range(len(p_t)))
    panels = [("Teacher (mixture)", p_t, "tab:gray", None)]
    for name, label, colour in (("seqkd", "SeqKD (forward KL)", "tab:blue"), ("gad", "GAD", "tab:red")):
        m = results["methods"][name]
        sub = f"fwd KL {m['forward_kl']:.2f} · rev KL {m['reverse_kl']:.2f} · std {m['std']:.2f}"
        panels.append((label, m["probs"], colour, sub))
    ymax = 1.1 * max(max(p) for _, p, _, _ in panels)
    with figure(path, 1, 3, figsize=(11, 3.2), sharey=True, dpi=110) as (fig, axes):
        for ax, (title, p, colour, sub) in zip(axes, panels):
            ax.bar(k, p, color=colour, alpha=0.75, width=0.85)
            if sub is not None:
                ax.step(k, p_t, where="mid", color="black", lw=1.0, label="teacher")
                ax.legend(loc="upper right", fontsize=8, frameon=False)
            ax.set_title(title if sub is None else f"{title}\n{sub}", fontsize=9)
            ax.set_xlabel("class")
            ax.set_ylim(0, ymax)
        axes[0].set_ylabel("probability")


def plot_init_sweep(results: dict[str, Any], path: Path) -> None:
    """Where GAD ends from each initial mean, next to where exact reverse-KL descent ends."""
    sweep = results["init_sweep"]
    x = [r["init_mean"] for r in sweep]
    with figure(path, figsize=(5.5, 3.4), dpi=110) as (fig, ax):
        for m in results["config"]["mode_means"]:
            ax.axhline(m, color="gray", lw=0.8, ls=":")
        ax.errorbar(
            x,
            [r["mean"] for r in sweep],
            yerr=[r["std"] for r in sweep],
            fmt="o",
            color="tab:red",
            capsize=2,
            label="GAD: final mean ± std",
        )
        flow = [r["reverse_kl_descent"] for r in sweep]
        ax.plot(x, [f["mean"] for f in flow], "k_", ms=12, label="exact reverse-KL descent: final mean")
        ax.set_xlabel(f"initial mean of the student (init std {results['config']['init_std']:.1f})")
        ax.set_ylabel("final student mean")
        ax.set_title("GAD from different starts (dotted: teacher modes)", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", frameon=False)
