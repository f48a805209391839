"""Every loss against values computed by hand (the arithmetic is in the comments)."""

import math

import pytest
import torch

from gad import losses


def test_bradley_terry_hand_values():
    # margins 1 - 0 = 1 and 1 - 1 = 0: (softplus(-1) + softplus(0)) / 2 = (0.313262 + 0.693147) / 2
    loss, m = losses.bradley_terry_loss(torch.tensor([1.0]), torch.tensor([[0.0, 1.0]]))
    assert loss.item() == pytest.approx(0.503204, abs=1e-6)
    assert m["disc/accuracy"] == 0.5  # a tie is not a win
    assert m["disc/margin"] == pytest.approx(0.5)


def test_bradley_terry_is_stable_for_huge_margins():
    loss, _ = losses.bradley_terry_loss(torch.tensor([500.0]), torch.tensor([[-500.0]]))
    assert loss.item() == 0.0
    loss, _ = losses.bradley_terry_loss(torch.tensor([-500.0]), torch.tensor([[500.0]]))
    assert loss.item() == pytest.approx(1000.0)


def test_bradley_terry_averages_over_groups_and_pairs():
    t = torch.tensor([0.0, 2.0])
    s = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    loss, _ = losses.bradley_terry_loss(t, s)
    assert loss.item() == pytest.approx(math.log(2))


def test_bce_hand_values():
    # teacher 2 → softplus(-2) = 0.126928; student -1 → softplus(-1) = 0.313262; mean 0.220095
    loss, m = losses.bce_discriminator_loss(torch.tensor([2.0]), torch.tensor([[-1.0]]))
    assert loss.item() == pytest.approx(0.220095, abs=1e-6)
    assert m["disc/accuracy"] == 1.0


def test_group_advantages():
    adv = losses.group_advantages(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    assert torch.allclose(adv[0], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-5)  # unbiased std of 1,2,3 = 1
    assert torch.equal(adv[1], torch.zeros(3))  # identical rewards carry no signal
    raw = losses.group_advantages(torch.tensor([[1.0, 3.0]]), scale_by_std=False)
    assert torch.equal(raw, torch.tensor([[-1.0, 1.0]]))


def test_clipped_policy_loss_hand_values():
    lp = torch.full((2, 2), math.log(1.5))  # ratio 1.5 everywhere
    old = torch.zeros(2, 2)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    # row 0 (A=+1): max(-1.5, -1.2) = -1.2 (clipped) per token; row 1 (A=-1): max(1.5, 1.2) = 1.5
    # token mean over 3 tokens: (-1.2 - 1.2 + 1.5) / 3 = -0.3
    loss, m = losses.clipped_policy_loss(lp, old, adv, mask, clip_ratio=0.2)
    assert loss.item() == pytest.approx(-0.3, abs=1e-6)
    assert m["policy/clip_frac"] == pytest.approx(2 / 3)


def test_policy_loss_normaliser_makes_micro_batches_add_up():
    torch.manual_seed(0)
    lp, old, adv = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4)
    mask = (torch.rand(4, 5) > 0.3).long()
    whole, _ = losses.clipped_policy_loss(lp, old, adv, mask)
    n = float(mask.sum())
    parts = sum(losses.clipped_policy_loss(lp[i : i + 2], old[i : i + 2], adv[i : i + 2], mask[i : i + 2], normaliser=n)[0]
                for i in (0, 2))
    assert parts.item() == pytest.approx(whole.item(), abs=1e-6)


def test_k3_kl_hand_values():
    # p = log 1, q = log 0.5: exp(q-p) - (q-p) - 1 = 0.5 + 0.693147 - 1 = 0.193147
    kl = losses.k3_kl(torch.tensor([0.0]), torch.tensor([math.log(0.5)]))
    assert kl.item() == pytest.approx(0.193147, abs=1e-6)
    assert losses.k3_kl(torch.tensor([-2.0]), torch.tensor([-2.0])).item() == 0.0
    loss, m = losses.kl_penalty(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(0.5), 0.0]]), torch.tensor([[1, 0]]))
    assert loss.item() == pytest.approx(0.193147, abs=1e-6)  # masked token ignored
    assert torch.isfinite(losses.k3_kl(torch.tensor([0.0]), torch.tensor([1e4])))  # clamped, not inf


def test_k3_clamp_caps_each_token_and_stops_its_gradient():
    """verl's low_var_kl: each token's k3 is clamped at 10; a clamped token adds no gradient."""
    lp = torch.tensor([0.0, 0.0], requires_grad=True)
    ref = torch.tensor([math.log(0.5), 5.0])  # token 2: exp(5) - 5 - 1 = 142.41
    assert losses.k3_kl(lp, ref)[1].item() == pytest.approx(math.exp(5) - 6, rel=1e-6)
    kl = losses.k3_kl(lp, ref, clamp=10.0)
    assert kl[0].item() == pytest.approx(0.193147, abs=1e-6) and kl[1].item() == 10.0
    kl.sum().backward()
    assert lp.grad[1].item() == 0.0 and lp.grad[0].item() == pytest.approx(1 - 0.5)  # d/dp of exp(q-p)-(q-p)-1
    loss, m = losses.kl_penalty(lp.detach()[None], ref[None], torch.tensor([[1, 1]]), clamp=10.0)
    assert loss.item() == pytest.approx((0.193147 + 10) / 2, abs=1e-5) and m["policy/kl"] == pytest.approx(loss.item())


def test_sft_loss_hand_values():
    lp = torch.tensor([[-1.0, -2.0], [-3.0, 0.0]])
    loss, _ = losses.sft_loss(lp, torch.tensor([[1, 1], [1, 0]]))
    assert loss.item() == pytest.approx(2.0)  # (1 + 2 + 3) / 3


def test_token_logprobs_and_entropy():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = [0.25, 0.75]
    lp = losses.token_logprobs(logits, torch.tensor([[1]]))
    assert lp.item() == pytest.approx(math.log(0.75))
    ent = losses.token_entropy(logits)
    assert ent.item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
