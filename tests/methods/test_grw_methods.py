"""The generalized-reweighting family (iw, resample, groupdro, cvar-dro, chi2-dro): what each claims."""

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.methods import TrainData, get_method
from grouprobust.methods.dro import chi2_weights, cvar_weights
from grouprobust.runs import run
from grouprobust.training import Trainer, seed_everything

TINY = {"n": 400, "n_val": 200, "n_test": 400}


def grouped_dataset(sizes, n_classes=2, n_attrs=2, seed=0, d=4, split="train", sep=1.0):
    """Samples of group g = y * n_attrs + a, ``sizes[g]`` of each (0 allowed), Gaussian inputs around sep * y."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(sizes)), sizes)
    y, a = g // n_attrs, g % n_attrs
    x = rng.standard_normal((len(g), d)).astype(np.float32) + sep * y[:, None]
    return GroupDataset(x, y, a, n_classes, n_attrs, split, "toy")


def make_method(name, train, **hparams):
    cls = get_method(name)
    cfg = resolve_config("spurious-gaussian", name, 0, TINY, hparams)
    splits = DatasetSplits(train, train, train)
    trainer = Trainer(cfg, splits, torch.device("cpu"))
    return trainer, trainer.new_method(cls, TrainData(trainer.train_set, trainer.device))


@pytest.mark.parametrize("balance", ["group", "class"])
def test_iw_weights_are_inverse_frequencies(balance):
    train = grouped_dataset([300, 20, 5, 75])
    _, method = make_method("iw", train, balance=balance)
    labels = train.g if balance == "group" else train.y
    counts = np.bincount(labels)
    w = method.weights.numpy()
    expected = len(labels) / (len(counts) * counts[labels])
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    # every group (class) carries the same total weight
    totals = np.bincount(labels, weights=w)
    np.testing.assert_allclose(totals, totals[0], rtol=1e-5)


def draw_counts(method, n_epochs=40):
    idx = torch.cat([b for _ in range(n_epochs) for b in method.batches()]).numpy()
    return idx


def test_resampled_batches_are_group_balanced_within_chi_square_tolerance():
    train = grouped_dataset([600, 40, 0, 10, 250, 100], n_attrs=3)  # group 2 has no sample
    _, method = make_method("resample", train)
    idx = draw_counts(method)
    per_group = np.bincount(train.g[idx], minlength=6)
    assert per_group[2] == 0
    observed = per_group[[0, 1, 3, 4, 5]]
    assert stats.chisquare(observed).pvalue > 1e-3
    # within a group, draws are uniform over its samples
    small = np.flatnonzero(train.g == 3)
    assert stats.chisquare(np.bincount(idx, minlength=len(train))[small]).pvalue > 1e-3
    # the same test rejects ERM's shuffle on this data (so it can fail)
    _, erm = make_method("erm", train)
    erm_groups = np.bincount(train.g[draw_counts(erm, 5)], minlength=6)[[0, 1, 3, 4, 5]]
    assert stats.chisquare(erm_groups).pvalue < 1e-10


def test_class_balanced_resampling_balances_classes_not_groups():
    train = grouped_dataset([600, 40, 10, 250])
    _, method = make_method("resample", train, balance="class")
    idx = draw_counts(method)
    assert stats.chisquare(np.bincount(train.y[idx])).pvalue > 1e-3
    assert stats.chisquare(np.bincount(train.g[idx])).pvalue < 1e-10


def train_steps(name, splits, steps_epochs=2, **hparams):
    """Model parameters after ``steps_epochs`` epochs of ``name`` from the seed-0 initialisation."""
    cfg = resolve_config("spurious-gaussian", name, 0, TINY, {"model": "mlp", **hparams})
    trainer = Trainer(cfg, splits, torch.device("cpu"))
    seed_everything(0)
    method = trainer.new_method(trainer.method_cls, TrainData(trainer.train_set, trainer.device))
    model = trainer.new_model()
    trainer.run_epochs(method, model, steps_epochs)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_groupdro_with_zero_step_size_is_erm_or_iw_or_resampling_step_for_step():
    splits = load_dataset("spurious-gaussian", 0, **TINY)
    erm = train_steps("erm", splits)
    dro_erm = train_steps("groupdro", splits, eta=0.0, q_init="empirical", sampler="shuffle", weight_decay=0.0)
    torch.testing.assert_close(dro_erm, erm, rtol=1e-5, atol=1e-6)
    iw = train_steps("iw", splits)
    dro_iw = train_steps("groupdro", splits, eta=0.0, sampler="shuffle", weight_decay=0.0)
    torch.testing.assert_close(dro_iw, iw, rtol=1e-5, atol=1e-6)
    resample = train_steps("resample", splits)
    dro_rs = train_steps("groupdro", splits, eta=0.0, weight_decay=0.0)
    torch.testing.assert_close(dro_rs, resample, rtol=1e-5, atol=1e-6)
    # a positive step size makes it differ from ERM
    moving = train_steps("groupdro", splits, eta=0.5, q_init="empirical", sampler="shuffle", weight_decay=0.0)
    assert (moving - erm).abs().max() > 1e-3


def hard_minority_splits(seed=0):
    """Four well separated groups; group 3 is small and its labels are random, so its loss stays the highest."""
    train = grouped_dataset([300, 300, 300, 40], seed=seed, sep=3.0)
    rng = np.random.default_rng(seed)
    y = train.y.copy()
    hard = np.flatnonzero(train.g == 3)
    y[hard] = rng.integers(0, 2, len(hard))
    train = GroupDataset(train.x, y, train.a, 2, 2, "train", "toy", g=train.g)
    return DatasetSplits(train, train, train)


def test_groupdro_moves_weight_to_the_highest_loss_group():
    splits = hard_minority_splits()
    cfg = resolve_config("spurious-gaussian", "groupdro", 0, TINY, {"epochs": 8, "model": "linear", "eta": 0.05})
    log = []
    trainer = Trainer(cfg, splits, torch.device("cpu"), log=log.append)
    trainer.fit()
    q = np.array([entry["group_weights"] for entry in log])
    assert q.shape == (8, 4)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
    assert q[-1].argmax() == 3 and q[-1, 3] > 0.5 > q[0, 3] - 0.25
    # and group 3 is indeed where the final model's training loss is highest
    with torch.no_grad():
        logits = trainer.model(torch.as_tensor(splits.train.x))
        losses = torch.nn.functional.cross_entropy(logits, torch.as_tensor(splits.train.y), reduction="none")
    group_loss = np.bincount(splits.train.g, weights=losses.numpy()) / np.bincount(splits.train.g)
    assert group_loss.argmax() == 3


def test_groupdro_with_an_empty_group_keeps_its_weight_at_zero(tmp_path):
    train = grouped_dataset([200, 0, 50, 150])
    splits = DatasetSplits(train, grouped_dataset([50] * 4, split="val"), grouped_dataset([50] * 4, split="test"))
    cfg = resolve_config("spurious-gaussian", "groupdro", 0, TINY, {"epochs": 3, "gen_adj": 2.0})
    result = run(cfg, out=tmp_path / "r", splits=splits)
    weights = result["method_info"]["final_group_weights"]
    assert weights[1] == 0.0 and all(np.isfinite(weights)) and sum(weights) == pytest.approx(1.0, rel=1e-5)
    assert "group_weights" in (tmp_path / "r" / "history.jsonl").read_text()


def reference_groupdro(method, train, batches, model):
    """The straightforward float64 formulas, batch by batch (the group_DRO reference's update): returns
    the objective of each batch and the q after it. ``L_g`` is the batch's mean loss on group ``g`` (0 when
    absent); ``q_g <- q_g exp(eta (L_g + C / sqrt(n_g)))`` over non-empty training groups, then normalised;
    the objective is ``mean_i q_{g_i} / s_{g_i} loss_i``."""
    hp, n_groups = method.hparams, train.n_groups
    counts = np.bincount(train.g, minlength=n_groups).astype(float)
    present = counts > 0
    freq = counts / counts.sum()
    q = np.where(present, freq if hp["q_init"] == "empirical" else present / present.sum(), 0.0)
    sampled = present / present.sum() if hp["sampler"] == "balanced" else freq
    objectives, qs = [], []
    for idx in batches:
        idx = idx.numpy()
        with torch.no_grad():
            logits = model(torch.as_tensor(train.x[idx]))
            losses = torch.nn.functional.cross_entropy(logits, torch.as_tensor(train.y[idx]), reduction="none")
        losses, g = losses.double().numpy(), train.g[idx]
        group_loss = np.array([losses[g == k].mean() if (g == k).any() else 0.0 for k in range(n_groups)])
        adjusted = group_loss + hp["gen_adj"] / np.sqrt(np.maximum(counts, 1.0))
        q = np.where(present, q * np.exp(hp["eta"] * adjusted), 0.0)
        q = q / q.sum()
        objectives.append(np.mean(q[g] / sampled[g] * losses))
        qs.append(q.copy())
    return objectives, qs


@pytest.mark.parametrize("sampler,batch_size,gen_adj", [("balanced", 32, 0.0), ("shuffle", 32, 1.5),
                                                        ("shuffle", 48, 0.0), ("balanced", 48, 1.5)])
def test_groupdro_steps_match_the_straightforward_formulas(sampler, batch_size, gen_adj):
    """Each step gives the reference's q and objective to float precision, including groups absent from a
    batch, an empty training group and a shuffle epoch's short last batch."""
    train = grouped_dataset([300, 0, 40, 10, 250, 100], n_attrs=3)
    hp = {"sampler": sampler, "batch_size": batch_size, "gen_adj": gen_adj, "eta": 0.5}
    _, method = make_method("groupdro", train, **hp)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    batches = list(method.batches())
    expected, expected_q = reference_groupdro(method, train, batches, model)
    for idx, objective, q in zip(batches, expected, expected_q):
        with torch.no_grad():
            got = method.loss(model, method.data.batch(idx))
        assert float(got) == pytest.approx(objective, rel=1e-5)
        np.testing.assert_allclose(method.q.numpy(), q, rtol=1e-5, atol=1e-12)
    assert method.q[1] == 0.0
    if sampler == "shuffle":
        assert len(batches[-1]) < batch_size  # the short last batch was checked


@pytest.mark.parametrize("name", ["resample", "groupdro"])
def test_weighted_sampler_is_one_seeded_multinomial_draw_per_epoch(name):
    train = grouped_dataset([600, 40, 0, 10, 250, 100], n_attrs=3)
    _, method = make_method(name, train, batch_size=64)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        expected = torch.multinomial(method.sample_probs, 16 * 64, replacement=True, generator=generator)
        assert torch.equal(torch.cat(list(method.batches())), expected)


def test_cvar_weights_average_the_worst_alpha_fraction():
    losses = torch.tensor([0.1, 5.0, 0.3, 2.0, 0.2, 1.0, 0.0, 0.4, 3.0, 0.5])
    w = cvar_weights(losses, 0.3)
    assert float((w * losses).sum()) == pytest.approx((5.0 + 3.0 + 2.0) / 3)
    assert float((cvar_weights(losses, 1.0) * losses).sum()) == pytest.approx(float(losses.mean()))


@pytest.mark.parametrize("rho", [0.05, 0.5, 2.0])
def test_chi2_weights_solve_the_worst_case_problem(rho):
    losses = torch.as_tensor(np.random.default_rng(1).exponential(size=12))
    n = len(losses)
    q = chi2_weights(losses, rho).numpy()
    assert q.min() >= 0 and q.sum() == pytest.approx(1.0)
    assert ((n * q - 1) ** 2).sum() / (2 * n) == pytest.approx(rho, rel=1e-6)  # the ball's boundary
    # matches a generic constrained optimiser
    cons = [{"type": "eq", "fun": lambda p: p.sum() - 1},
            {"type": "ineq", "fun": lambda p: rho - ((n * p - 1) ** 2).sum() / (2 * n)}]
    best = optimize.minimize(lambda p: -(p @ losses.numpy()), np.full(n, 1 / n), constraints=cons,
                             bounds=[(0, 1)] * n, method="SLSQP", options={"ftol": 1e-12})
    assert q @ losses.numpy() == pytest.approx(-best.fun, rel=1e-5)
    assert float(chi2_weights(losses, 0.0) @ losses) == pytest.approx(float(losses.mean()))
    assert float(chi2_weights(losses, 100.0) @ losses) == pytest.approx(float(losses.max()))


@pytest.mark.slow
def test_groupdro_beats_erm_worst_group_accuracy_on_spurious_gaussian_with_defaults():
    for seed in (0, 1):
        erm = run(resolve_config("spurious-gaussian", "erm", seed))["metrics"]["test"]["worst_group_acc"]
        dro = run(resolve_config("spurious-gaussian", "groupdro", seed))["metrics"]["test"]["worst_group_acc"]
        assert dro > erm + 0.2, (seed, erm, dro)
