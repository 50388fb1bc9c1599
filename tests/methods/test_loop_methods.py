"""The SubpopBench-style loop methods (irm, vrex, mmd, coral, mixup, lisa, lff) and the exact CVaR
weights: what each claims, not only that it runs (tests/test_registries.py runs every method)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import optimize

from grouprobust.config import resolve_config
from grouprobust.data import load_dataset
from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.errors import GroupRobustError
from grouprobust.methods import TrainData, get_method
from grouprobust.methods.dro import cvar_weights
from grouprobust.methods.environments import environment_risks
from grouprobust.methods.feature_matching import coral_penalty, mmd_penalty
from grouprobust.methods.irm import irm_penalty
from grouprobust.methods.mixup import lisa_partners
from grouprobust.methods.registry import list_methods
from grouprobust.methods.vrex import vrex_penalty
from grouprobust.models import build_model, pick_device, predict_logits
from grouprobust.training import Trainer, TrainerContext, seed_everything

torch.set_num_threads(1)
TINY = {"n": 400, "n_val": 200, "n_test": 200}
NEW = ["irm", "vrex", "mmd", "coral", "mixup", "lisa", "lff"]


def grouped_dataset(sizes, n_attrs=2, seed=0, d=4):
    """Samples of group g = y * n_attrs + a, ``sizes[g]`` of each, Gaussian inputs around y."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(sizes)), sizes)
    y, a = g // n_attrs, g % n_attrs
    x = rng.standard_normal((len(g), d)).astype(np.float32) + y[:, None]
    return GroupDataset(x, y, a, 2, n_attrs, "train", "toy")


def make_method(name, splits, **hparams):
    """A trainer (device picked as a run picks it) and the method instance on its training split."""
    cfg = resolve_config("spurious-gaussian", name, 0, TINY, hparams)
    trainer = Trainer(cfg, splits, pick_device())
    seed_everything(0)
    method = trainer.new_method(get_method(name), TrainData(trainer.train_set, trainer.device))
    method.setup(TrainerContext(trainer))
    return trainer, method


def toy_splits(sizes=(200, 20, 20, 200), n_attrs=2):
    train = grouped_dataset(list(sizes), n_attrs)
    return DatasetSplits(train, train, train)


# --- IRM ----------------------------------------------------------------------------------------

def _two_class_logits(z):
    return torch.stack([torch.zeros_like(z), z], dim=1).double()


def test_irm_penalty_is_zero_for_a_classifier_optimal_in_every_environment():
    # env 0: logit log 3 on four samples, three of them positive (p = 3/4 is the best constant there);
    # env 1: logit -log 2 on three samples, one positive (p = 1/3). Scaling the logits cannot help.
    z = torch.tensor([np.log(3)] * 4 + [-np.log(2)] * 3)
    y = torch.tensor([1, 1, 1, 0, 1, 0, 0])
    env = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    assert float(irm_penalty(_two_class_logits(z), y, env).detach()) == pytest.approx(0.0, abs=1e-12)
    # Over-confident in env 0 only, or under-confident everywhere: the penalty is positive.
    assert float(irm_penalty(_two_class_logits(z * torch.tensor([2.0] * 4 + [1.0] * 3)), y, env).detach()) > 1e-3
    assert float(irm_penalty(_two_class_logits(z / 2), y, env).detach()) > 1e-3


def test_irm_penalty_is_the_mean_squared_gradient_of_each_environment_risk():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    y, env = torch.randint(0, 3, (30,), generator=gen), torch.randint(0, 4, (30,), generator=gen)
    expected = []
    for e in range(4):
        m = env == e
        w = torch.ones((), dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(F.cross_entropy(logits[m] * w, y[m]), w)
        expected.append(float(g) ** 2)
    assert float(irm_penalty(logits, y, env).detach()) == pytest.approx(np.mean(expected), rel=1e-10)


@pytest.mark.parametrize("name", ["irm", "vrex"])
def test_penalty_weight_is_one_until_the_annealing_steps_then_lambda(name):
    _, method = make_method(name, toy_splits(), **{f"{name}_anneal_iters": 2, f"{name}_lambda": 50.0})
    torch.manual_seed(0)
    model = build_model("mlp", (4,), 2, 8).to(method.data.device)
    batch = method.data.batch(next(iter(method.batches())))
    logits = model(batch.x)
    risks = environment_risks(F.cross_entropy(logits, batch.y, reduction="none"), method.batch_env(batch),
                              method.n_envs)
    pen = (irm_penalty(logits, batch.y, method.batch_env(batch)) if name == "irm" else vrex_penalty(risks))
    assert float(pen.detach()) > 0
    values = [float(method.loss(model, batch).detach()) for _ in range(4)]
    expected = [float((risks.mean() + w * pen).detach()) for w in (1.0, 1.0, 50.0, 50.0)]
    np.testing.assert_allclose(values, expected, rtol=1e-5)


# --- VREx ---------------------------------------------------------------------------------------

def test_vrex_penalty_equals_the_variance_of_the_group_risks():
    gen = torch.Generator().manual_seed(1)
    losses = torch.rand(50, generator=gen, dtype=torch.float64) * 3
    env = torch.randint(0, 5, (50,), generator=gen)
    env[env == 3] = 4  # environment 3 absent from the batch: it has no risk and is left out
    risks = environment_risks(losses, env, 5)
    by_hand = [losses[env == e].mean().item() for e in (0, 1, 2, 4)]
    np.testing.assert_allclose(risks.numpy(), by_hand, rtol=1e-12)
    assert float(vrex_penalty(risks)) == pytest.approx(np.var(by_hand), rel=1e-12)
    assert float(vrex_penalty(torch.full((4,), 0.7))) == 0.0


# --- MMD and CORAL ------------------------------------------------------------------------------

@pytest.mark.parametrize("penalty", [mmd_penalty, coral_penalty], ids=["mmd", "coral"])
def test_feature_penalties_vanish_for_identical_group_distributions_and_grow_with_a_shift(penalty):
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    env = torch.tensor([0] * 40 + [1] * 40 + [2] * 40)
    same = torch.cat([base, base[torch.randperm(40, generator=gen)], base.flip(0)])  # one multiset, three groups
    assert float(penalty(same, env)) == pytest.approx(0.0, abs=1e-10)
    shifts = [float(penalty(torch.cat([base, base + s, base]), env)) for s in (0.3, 1.0)]
    assert 0 < shifts[0] < shifts[1]
    scaled = float(penalty(torch.cat([base, 2 * base, base]), env))  # same mean, other covariance
    assert scaled > 1e-3


def test_mmd_penalty_matches_the_pairwise_definition():
    gen = torch.Generator().manual_seed(3)
    f = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    env = torch.tensor([0] * 10 + [1] * 12 + [2] * 8)
    gammas = (0.1, 1.0)

    def k(u, v):
        d = ((u[:, None, :] - v[None, :, :]) ** 2).sum(-1)
        return sum(torch.exp(-g * d) for g in gammas)

    parts = [f[env == e] for e in range(3)]
    pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
    expected = np.mean([float(k(parts[i], parts[i]).mean() + k(parts[j], parts[j]).mean()
                              - 2 * k(parts[i], parts[j]).mean()) for i, j in pairs])
    assert float(mmd_penalty(f, env, gammas)) == pytest.approx(expected, rel=1e-10)


def test_coral_penalty_matches_means_and_unbiased_covariances():
    gen = torch.Generator().manual_seed(4)
    f = torch.randn(25, 4, generator=gen, dtype=torch.float64)
    env = torch.tensor([0] * 12 + [1] * 12 + [2])  # env 2 has one sample: no covariance, left out
    a, b = f[:12].numpy(), f[12:24].numpy()
    expected = ((a.mean(0) - b.mean(0)) ** 2).mean() + ((np.cov(a.T) - np.cov(b.T)) ** 2).mean()
    assert float(coral_penalty(f, env)) == pytest.approx(expected, rel=1e-10)


def test_feature_matching_penalises_the_models_features():
    """The method's loss is mean group risk + gamma * penalty on ``model.features``."""
    _, method = make_method("coral", toy_splits(), coral_gamma=3.0)
    torch.manual_seed(0)
    model = build_model("mlp", (4,), 2, 8).to(method.data.device)
    batch = method.data.batch(next(iter(method.batches())))
    feats = model.features(batch.x)
    env = method.batch_env(batch)
    risks = environment_risks(F.cross_entropy(model.head(feats), batch.y, reduction="none"), env, method.n_envs)
    expected = float((risks.mean() + 3.0 * coral_penalty(feats, env)).detach())
    assert float(method.loss(model, batch).detach()) == pytest.approx(expected, rel=1e-5)


# --- environments -------------------------------------------------------------------------------

@pytest.mark.parametrize("env", ["group", "attribute"])
def test_environment_batches_are_balanced_over_the_chosen_environments(env):
    splits = toy_splits((300, 30, 60, 10), n_attrs=2)
    _, method = make_method("vrex", splits, env=env)
    train = splits.train
    labels = train.g if env == "group" else train.a
    assert method.n_envs == (4 if env == "group" else 2)
    np.testing.assert_array_equal(method.env.cpu().numpy(), labels)
    idx = torch.cat([b for _ in range(30) for b in method.batches()]).numpy()
    share = np.bincount(labels[idx]) / len(idx)
    np.testing.assert_allclose(share, 1 / len(share), atol=0.03)


# --- LISA ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["intra-label", "intra-domain"])
def test_lisa_partners_share_the_label_or_the_attribute(mode):
    gen = torch.Generator().manual_seed(5)
    y = torch.randint(0, 2, (64,), generator=gen)
    a = torch.randint(0, 2, (64,), generator=gen)
    if mode == "intra-label":
        y[0] = 2  # the only example of its class: it has no intra-label partner
    else:
        a[0] = 2  # the only example of its attribute: no intra-domain partner
    j = lisa_partners(y, a, mode, gen)
    mixed = j != torch.arange(64)
    assert mixed.sum() == 63 and j[0] == 0
    if mode == "intra-label":
        assert (y[j] == y).all() and (a[j] != a)[mixed].all()
    else:
        assert (a[j] == a).all() and (y[j] != y)[mixed].all()
    assert len(set(j[mixed].tolist())) > 5  # partners are drawn, not always the same example


# --- LfF ----------------------------------------------------------------------------------------

def test_lff_weights_rise_on_the_examples_the_biased_model_gets_wrong():
    splits = load_dataset("spurious-gaussian", 0, n=1000, n_val=100, n_test=100)
    trainer, method = make_method("lff", splits, epochs=3, batch_size=100, lr=1e-2)
    assert method.data.g is None  # lff reads no group labels
    seed_everything(0)
    model = trainer.new_model()
    trainer.run_epochs(method, model, 3)
    data = method.data
    all_idx = torch.arange(data.n, device=data.device)
    w = method.weights(all_idx, data.y).cpu().numpy()
    biased_wrong = (predict_logits(method.biased, data.x).argmax(1) != data.y.cpu()).numpy()
    assert 0.02 < biased_wrong.mean() < 0.5
    assert w[biased_wrong].mean() > 2 * w[~biased_wrong].mean()
    conflicting = splits.train.a != splits.train.y  # the spurious feature disagrees with the label
    assert w[conflicting].mean() > w[~conflicting].mean()
    assert method.biased is not model  # the biased model is the method's own


# --- CVaR: exact fractional weights --------------------------------------------------------------

def _cvar_lp(losses, alpha):
    """max_q sum q_i l_i  s.t. 0 <= q_i <= 1 / (alpha n), sum q = 1, by linear programming."""
    n = len(losses)
    res = optimize.linprog(-losses, A_eq=np.ones((1, n)), b_eq=[1.0], bounds=[(0, 1 / (alpha * n))] * n,
                           method="highs")
    return -res.fun


@pytest.mark.parametrize("n", [7, 20, 64])
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.13, 0.25, 0.5, 0.9, 1.0])
def test_cvar_weights_solve_the_cvar_linear_program(n, alpha):
    losses = np.random.default_rng(n).exponential(size=n)
    w = cvar_weights(torch.as_tensor(losses), alpha).numpy()
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-12)
    assert w.max() <= 1 / (alpha * n) + 1e-12 or alpha * n < 1
    assert float(w @ losses) == pytest.approx(_cvar_lp(losses, alpha), rel=1e-9)
    # Rockafellar-Uryasev: CVaR = min_eta eta + mean((l - eta)_+) / alpha, attained at a loss value
    ru = min(eta + np.maximum(losses - eta, 0).mean() / alpha for eta in losses)
    if alpha * n >= 1:
        assert float(w @ losses) == pytest.approx(ru, rel=1e-9)


def test_cvar_weights_give_the_boundary_example_its_fractional_mass():
    losses = torch.tensor([5.0, 1.0, 4.0, 3.0, 2.0, 0.5, 0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    w = cvar_weights(losses, 0.25)  # alpha n = 2.5: weights 0.4, 0.4 and 0.2 on the three largest
    np.testing.assert_allclose(w.numpy(), [0.4, 0, 0.4, 0.2, 0, 0, 0, 0, 0, 0], atol=1e-12)
    # ceil(alpha n) = 3 uniform weights would give (5 + 4 + 3) / 3 = 4.0, under the true CVaR 4.2
    assert float(w @ losses) == pytest.approx(4.2)


# --- listing ------------------------------------------------------------------------------------

def test_new_methods_are_listed_with_their_equivalents_and_label_needs():
    listed = {m["name"]: m for m in list_methods()}
    for name in NEW:
        assert listed[name]["kind"] == "loop" and listed[name]["same_as"], name
    assert listed["lff"]["needs"] == "none"
    assert all(listed[m]["needs"] == "full" for m in NEW if m != "lff")


def test_env_attribute_without_attributes_is_refused_naming_the_parameter():
    base = grouped_dataset([50, 10, 10, 50])
    no_attrs = GroupDataset(base.x, base.y, None, 2, 2, "train", "toy", g=base.g)  # groups, but no attribute
    splits = DatasetSplits(no_attrs, no_attrs, no_attrs)
    with pytest.raises(GroupRobustError, match="env=attribute.*use env=group") as err:
        make_method("irm", splits, env="attribute")
    assert err.value.subject == "hparam:env" and "\n" not in str(err.value)


@pytest.mark.parametrize("ratio, shared", [(1.0, "label"), (0.0, "attribute")])
def test_lisa_method_mixes_within_label_or_within_attribute_by_mix_ratio(ratio, shared):
    splits = toy_splits((100, 40, 40, 100))
    _, method = make_method("lisa", splits, mix_ratio=ratio)
    train = splits.train
    y, a = torch.as_tensor(train.y), torch.as_tensor(train.a)
    for i in list(method.batches())[:3]:  # CPU indices of a batch into the training set
        j = method.partners(method.data.batch(i)).cpu()  # partner positions within the batch
        mixed = j != torch.arange(len(i))
        assert mixed.float().mean() > 0.8
        if shared == "label":
            assert (y[i[j]] == y[i]).all() and (a[i[j]] != a[i])[mixed].all()
        else:
            assert (a[i[j]] == a[i]).all() and (y[i[j]] != y[i])[mixed].all()
