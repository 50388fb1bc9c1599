"""Losses of the generalized-reweighting family: values and gradients against their formulas."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grouprobust.config import resolve_hparams
from grouprobust.losses import LOSSES, make_loss, multiclass_margin
from grouprobust.methods import get_method


def loss_and_grad(name, logits, y, counts=(1, 1), **params):
    hp = resolve_hparams(get_method("erm"), {"loss": name, **params})
    fn = make_loss(hp, np.array(counts))
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    out = fn(z, torch.tensor(y))
    out.sum().backward()
    return out.detach().numpy(), z.grad.numpy()


def softmax(v):
    e = np.exp(v - np.max(v))
    return e / e.sum()


def test_squared_loss_value_and_gradient():
    value, grad = loss_and_grad("squared", [[2.0, -1.0], [0.5, 0.5]], [0, 1])
    # (2-1)^2 + (-1-0)^2 = 2 ;  (0.5-0)^2 + (0.5-1)^2 = 0.5 ; gradient 2 (z - onehot)
    np.testing.assert_allclose(value, [2.0, 0.5])
    np.testing.assert_allclose(grad, [[2.0, -2.0], [1.0, -1.0]])


@pytest.mark.parametrize("form", ["additive", "multiplicative", "vs"])
def test_logit_adjusted_forms_match_their_formulas(form):
    counts, tau, gamma = (30, 10), 1.5, 0.3
    z, y = np.array([1.0, 0.2]), 1
    prior = np.array(counts) / sum(counts)
    delta = (np.array(counts) / max(counts)) ** gamma if form != "additive" else np.ones(2)
    iota = tau * np.log(prior) if form != "multiplicative" else np.zeros(2)
    adjusted = delta * z + iota
    p = softmax(adjusted)
    expected = -math.log(p[y])
    expected_grad = delta * (p - np.eye(2)[y])
    value, grad = loss_and_grad("logit-adjusted", [z.tolist()], [y], counts, la_form=form, la_tau=tau, la_gamma=gamma)
    np.testing.assert_allclose(value, [expected], rtol=1e-12)
    np.testing.assert_allclose(grad[0], expected_grad, rtol=1e-12)
    # The adjustment favours the rare class's margin: its loss is larger than plain cross-entropy.
    assert expected > -math.log(softmax(z)[y])


def test_logit_adjustment_with_tau_zero_is_cross_entropy():
    value, _ = loss_and_grad("logit-adjusted", [[0.3, -0.7, 2.0]], [2], (5, 50, 500), la_tau=0.0)
    np.testing.assert_allclose(value, [-math.log(softmax(np.array([0.3, -0.7, 2.0]))[2])], rtol=1e-12)


def test_margin_generalises_binary_margin_and_cross_entropy():
    logits = torch.tensor([[0.3, -0.7, 2.0], [1.0, 4.0, -2.0]], dtype=torch.float64)
    y = torch.tensor([2, 0])
    margin = multiclass_margin(logits, y)
    np.testing.assert_allclose(F.softplus(-margin).numpy(), F.cross_entropy(logits, y, reduction="none").numpy())
    binary = multiclass_margin(torch.tensor([[0.5, 2.0]]), torch.tensor([1]))
    assert float(binary) == pytest.approx(1.5)


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.0, 1.0)])
def test_poly_tailed_values_and_gradients(alpha, beta):
    # binary logits [0, m] with y=1 have margin m
    margins = [beta - 2.0, beta - 0.5, beta + 0.5, beta + 3.0]
    value, grad = loss_and_grad("poly-tailed", [[0.0, m] for m in margins], [1] * 4,
                                poly_alpha=alpha, poly_beta=beta)
    for m, v, g in zip(margins, value, grad):
        if m < beta:
            expected = math.log1p(math.exp(-m)) + 1 - math.log1p(math.exp(-beta))
            slope = -1 / (1 + math.exp(m))
        else:
            expected = (m - beta + 1) ** -alpha
            slope = -alpha * (m - beta + 1) ** (-alpha - 1)
        assert v == pytest.approx(expected, rel=1e-12)
        np.testing.assert_allclose(g, [-slope, slope], rtol=1e-12)  # d margin / d logits = [-1, 1]
    # continuous at beta: both pieces equal 1 there
    left, _ = loss_and_grad("poly-tailed", [[0.0, beta - 1e-9]], [1], poly_alpha=alpha, poly_beta=beta)
    assert left[0] == pytest.approx(1.0, abs=1e-8)


def test_poly_tailed_decays_polynomially_cross_entropy_exponentially():
    margins = np.array([10.0, 20.0, 40.0, 80.0, 160.0])
    logits = [[0.0, m] for m in margins]
    poly, _ = loss_and_grad("poly-tailed", logits, [1] * 5, poly_alpha=2.0, poly_beta=0.0)
    # log-log slope -alpha: each doubling of the margin divides the loss by about 2^alpha
    slopes = np.diff(np.log(poly)) / np.diff(np.log(margins))
    np.testing.assert_allclose(slopes, -2.0, atol=0.2)
    assert np.all(poly * (margins + 1) ** 2 == pytest.approx(1.0))
    # cross-entropy's ratio between consecutive margins collapses (exponential tail: e^-10, e^-20);
    # only margins up to 20, beyond which float64 cross-entropy rounds to 0
    ce, _ = loss_and_grad("ce", logits[:2], [1] * 2)
    assert ce[1] / ce[0] < 1e-4
    assert np.all(poly[1:] / poly[:-1] > 0.2)


def test_every_new_loss_parameter_has_a_default_inside_its_search_range():
    for name in ("squared", "logit-adjusted", "poly-tailed"):
        for key, param in LOSSES[name].params.items():
            if param.search is None:  # fixed unless set (the class-weight parameters every loss takes)
                continue
            kind = param.search[0]
            if kind == "choice":
                assert param.default in param.search[1], key
            else:
                assert param.search[1] <= param.default <= param.search[2], key
