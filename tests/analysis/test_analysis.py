"""Head cosine, DCI scores and the strong-convexity bound of `grouprobust.analysis`."""

import numpy as np
import pytest
import torch

from grouprobust.analysis import completeness_per_factor, cosine, dci, disentanglement
from grouprobust.analysis.convexity import alignment_bound, group_objectives, head_theta, min_curvature
from grouprobust.errors import GroupRobustError


def test_cosine_is_one_against_itself_and_scale_invariant():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 7))
    assert cosine(w, w) == pytest.approx(1.0)
    assert cosine(w, 4.2 * w) == pytest.approx(1.0)
    assert cosine(0.01 * w, w) == pytest.approx(1.0)
    assert cosine(w, -w) == pytest.approx(-1.0)
    # Adding one vector to every class row does not change a softmax head.
    assert cosine(w, w + rng.standard_normal(7)) == pytest.approx(1.0)
    other = rng.standard_normal((3, 7))
    assert abs(cosine(w, other)) < 0.9


def test_cosine_of_binary_head_with_direction():
    u = np.array([1.0, 0.0, 0.0])
    head = np.array([[0.3, 2.0, 0.0], [0.3 + 2.0, 2.0, 0.0]])  # scores class 1 by 2 * x0
    assert cosine(head, u) == pytest.approx(1.0)
    assert cosine(head, np.array([0.0, 1.0, 0.0])) == pytest.approx(0.0)
    with pytest.raises(GroupRobustError):
        cosine(head, np.ones(4))


def test_completeness_is_one_for_one_dimension_per_factor_and_lower_when_spread():
    assert completeness_per_factor(np.eye(2)) == pytest.approx([1.0, 1.0])
    assert disentanglement(np.eye(2)) == pytest.approx(1.0)
    spread = np.array([[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]])
    comp = completeness_per_factor(spread)
    assert comp[1] == pytest.approx(1.0)
    assert comp[0] == pytest.approx(1 - np.log(2) / np.log(3))
    assert completeness_per_factor(np.ones((4, 1)))[0] == pytest.approx(0.0)
    with pytest.raises(GroupRobustError):
        completeness_per_factor(np.array([[1.0, 0.0], [1.0, 0.0]]))


def test_dci_pipeline_on_axis_aligned_and_spread_codes():
    rng = np.random.default_rng(0)
    n = 600
    y, a = rng.integers(0, 2, n), rng.integers(0, 2, n)
    aligned = dci(np.stack([y, a], axis=1).astype(float), np.stack([y, a], axis=1), ["label", "attribute"])
    assert aligned.completeness["label"] == pytest.approx(1.0)
    assert aligned.completeness["attribute"] == pytest.approx(1.0)
    assert aligned.disentanglement == pytest.approx(1.0)
    assert aligned.informativeness["label"] == 1.0
    # The label spread over four noisy copies: still predictable, but no single dimension holds it.
    copies = y[:, None] + 0.3 * rng.standard_normal((n, 4))
    spread = dci(np.concatenate([copies, a[:, None]], axis=1), np.stack([y, a], axis=1), ["label", "attribute"])
    assert spread.completeness["label"] < 0.7
    assert spread.informativeness["label"] > 0.9
    assert spread.completeness["attribute"] > 0.95


def _toy(seed=0, n=120, d=3, k=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rng.integers(0, k, n)
    g = y * 2 + rng.integers(0, 2, n)
    return x, y, g


def test_min_curvature_matches_autograd_hessian_on_centred_subspace():
    x, y, _ = _toy()
    theta = head_theta(np.random.default_rng(1).standard_normal((3, 3)), np.zeros(3))
    l2 = 0.05

    def objective(flat):
        t = flat.reshape(3, 4)
        logits = torch.as_tensor(x) @ t[:, :3].T + t[:, 3]
        return torch.nn.functional.cross_entropy(logits, torch.as_tensor(y)) + 0.5 * l2 * (flat ** 2).sum()

    hess = torch.autograd.functional.hessian(objective, torch.as_tensor(theta.ravel())).numpy()
    # Orthonormal basis of centred (3 x 4) matrices: directions orthogonal to "same vector in every row".
    shifts = np.stack([np.kron(np.ones(3), np.eye(4)[j]) for j in range(4)], axis=1)
    q, _ = np.linalg.qr(np.concatenate([shifts, np.eye(12)], axis=1))
    basis = q[:, 4:12]
    expected = np.linalg.eigvalsh(basis.T @ hess @ basis)[0]
    assert min_curvature(theta, x, l2) == pytest.approx(expected, rel=1e-6)
    # On the full space the shift directions have curvature exactly l2.
    assert np.linalg.eigvalsh(hess)[0] == pytest.approx(l2, rel=1e-6)


def test_alignment_bound_upper_bounds_the_worst_group_gap():
    x, y, g = _toy(n=200)
    rng = np.random.default_rng(3)
    for l2 in (0.0, 0.1, 1.0):
        for _ in range(5):
            te = head_theta(rng.standard_normal((3, 3)), rng.standard_normal(3))
            td = head_theta(rng.standard_normal((3, 3)), rng.standard_normal(3))
            out = alignment_bound(te, td, x, y, g, 6, l2, grid=21)
            assert out["loss_gap"] <= out["bound"] + 1e-9
            assert out["mu"] >= l2 - 1e-12
            f_e = np.nanmax(group_objectives(te, x, y, g, 6, l2))
            f_d = np.nanmax(group_objectives(td, x, y, g, 6, l2))
            assert out["loss_gap"] == pytest.approx(f_e - f_d)
    same = alignment_bound(te, te, x, y, g, 6, 0.1)
    assert same["dist"] == pytest.approx(0.0, abs=1e-6) and same["bound"] == pytest.approx(0.0, abs=1e-6)
