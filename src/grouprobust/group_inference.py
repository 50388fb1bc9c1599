"""Group inference: training groups for methods that need them, inferred without training group labels.

Every inference method reads a *reference* run (a finished ERM run, usually trained briefly or on
all of train; `grouprobust.trained.load_trained_run`) and returns `InferredGroups`: for each
training sample an inferred attribute ``a_hat`` in ``0..K-1`` and a confidence in [0, 1]. Inferred
groups are always (class, inferred attribute) pairs, ``g = y * K + a_hat`` (`grouprobust.grouping`),
so every method that reads groups or attributes (resample, iw, GroupDRO, GERNE, the DRO losses)
runs on them unchanged.

Methods (``INFERENCE_METHODS``):

* ``errors`` (JTT's split): ``a_hat = 1`` where the reference model misclassifies the sample.
* ``confidence`` (GERNE's pseudo-attributes): ``a_hat = 1`` where its softmax confidence on the true
  label is at most ``threshold``.
* ``cluster`` (George-style, Sohoni et al. 2020): per class, k-means (or a Gaussian mixture) with
  ``k`` components on the standardised features of the reference model; confidence = posterior.
* ``spare`` (Yang et al. 2023): per class, k-means on the reference model's *outputs* (softmax
  probabilities; the reference should be an early-epoch model); SPARE's importance sampling is
  group-balanced resampling on these groups (``--method resample``).
* ``eiil`` (Creager et al. 2021): two environments found by maximising the IRMv1 penalty of the
  reference model, ``sum_e (d/dw R_e(w * logits)|_{w=1})^2``, over soft assignments (`eiil_assignment`),
  then thresholded; groups are (class, environment).
* ``ssa`` (Nam et al. 2022): an attribute predictor trained on the group-labelled *validation*
  split (features -> attribute, per class), refined by self-training on confident training
  samples, then applied to train. It reads validation group labels only, half of them (the other
  half scores it: ``info["heldout_val_accuracy"]``).

Inferred groups are never group labels: the run that trains on them records which inference made
them, the label regime still decides what the method may read, and when true groups exist the
quality of the inference (`inference_quality`) is reported, never used for training or selection.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from grouprobust.data.dataset import GroupDataset
from grouprobust.errors import GroupRobustError
from grouprobust.grouping import Grouper
from grouprobust.models import predict_logits
from grouprobust.outdir import OutputDirectory, check_output_path
from grouprobust.output import read_json, save_npz_atomic, write_json_atomic
from grouprobust.params import FRACTION, Choice, Interval, Param, resolve_params
from grouprobust.registry import Registry
from grouprobust.trained import TrainedRun

FORMAT = "grouprobust-inferred-groups/1"


@dataclass
class InferredGroups:
    """Inferred attribute ``attribute`` (``n_train``,) in ``0..n_attrs-1`` and ``confidence`` in [0, 1]
    for every training sample of the reference run's dataset config (``dataset``, ``data``, ``seed``)."""

    attribute: np.ndarray
    confidence: np.ndarray
    n_attrs: int
    method: str
    dataset: str
    data: dict[str, Any]
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    #: `rows_fingerprint` of the training split the groups label ("" in files written before it was kept).
    rows: str = ""

    def check_labels(self, train: GroupDataset, dataset: str, data: dict[str, Any], seed: int, path: Any) -> None:
        """Refuse, with one line, to apply these groups to a training split other than the one they label.

        Matched on the labelled rows themselves (`rows_fingerprint`), so the same data read under another
        seed or another spelling of its options matches; a file without the fingerprint is matched on the
        dataset, its options and the seed, and the message names what differs.
        """
        if self.rows:
            mine = rows_fingerprint(train)
            if mine == self.rows:
                return
            raise GroupRobustError(
                f"train_groups {path} label another training split ({len(self.attribute)} rows, fingerprint "
                f"{self.rows[:12]}) than this run's ({len(train)} rows, {mine[:12]}), made from {self.dataset} "
                f"seed {self.seed}; infer them from a run on this data (same dataset options and, where the seed "
                "draws the splits, the same seed)", subject="hparam:train_groups")
        if (self.dataset, self.data, self.seed) == (dataset, data, seed):
            return
        differ = [f"{k}: {self.data.get(k)!r} there, {data.get(k)!r} here" for k in sorted({*self.data, *data})
                  if self.data.get(k) != data.get(k)]
        if self.dataset != dataset:
            differ.insert(0, f"dataset: {self.dataset} there, {dataset} here")
        if self.seed != seed:
            differ.append(f"seed: {self.seed} there, {seed} here")
        raise GroupRobustError(f"train_groups {path} were inferred for other data ({'; '.join(differ)}); infer them "
                               "again", subject="hparam:train_groups")

    def save(self, path: Path | str) -> Path:
        """Write the groups file: ``PATH`` (npz: attribute, confidence) and ``PATH.json`` (what made them);
        returns ``PATH``. Refuses (`check_new_groups_file`) to replace either file."""
        path = check_new_groups_file(path)
        output = OutputDirectory(path, "groups file", file=True)
        meta = path.with_suffix(".json")
        with output.claim(), output.staging() as stage:
            check_new_groups_file(path)  # again under the claim: another process may have written it meanwhile
            save_npz_atomic(stage / path.name, attribute=self.attribute.astype(np.int64),
                            confidence=self.confidence.astype(np.float64))
            write_json_atomic(stage / meta.name, {
                "format": FORMAT, "method": self.method, "n_attrs": self.n_attrs, "n_train": len(self.attribute),
                "dataset": self.dataset, "data": self.data, "seed": self.seed, "params": self.params,
                "source": self.source, "info": self.info, "rows_fingerprint": self.rows})
            output.publish(stage, [path.name, meta.name])  # the pair appears whole, or not at all
        return path

    def apply(self, train: GroupDataset) -> GroupDataset:
        """``train`` (labels only) with these inferred attributes and their (class, attribute) groups."""
        if len(train) != len(self.attribute):
            raise GroupRobustError(f"the inferred groups describe {len(self.attribute)} training samples but the "
                                   f"training split has {len(train)}; infer them again for this dataset",
                                   subject="hparam:train_groups")
        plain = train.without_groups()
        names = Grouper(train.n_classes, self.n_attrs, None, [f"{self.method}={k}" for k in range(self.n_attrs)]).names
        return GroupDataset(plain.x, plain.y, self.attribute, plain.n_classes, self.n_attrs, plain.split, plain.name,
                            group_names=names, meta=dict(plain.meta), inputs=plain.inputs)


def rows_fingerprint(train: GroupDataset) -> str:
    """``sha256:...`` of a training split's inputs and labels (values, shapes and dtypes, in row order)."""
    digest = hashlib.sha256()
    for values in (train.x, train.y):
        array = np.ascontiguousarray(values)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()


def check_new_groups_file(path: Path | str) -> Path:
    """``path`` as a `Path` if a groups file can be written there without replacing anything; else a one-line error.

    The pair ``PATH`` (.npz) and ``PATH.json`` must both be new, and their folder creatable: checked before
    an inference is computed, so a bad ``--out`` costs nothing.
    """
    path = Path(path).expanduser()
    if path.suffix != ".npz":
        raise GroupRobustError(f"groups file {path} must end in .npz; give --out a name like groups.npz", subject="out")
    for taken in (path, path.with_suffix(".json")):
        if taken.exists() or taken.is_symlink():
            raise GroupRobustError(f"{taken} exists; choose another groups file or delete it", subject="out")
    check_output_path(path.parent, "folder for the groups file")
    return path


def load_inferred_groups(path: Path | str) -> InferredGroups:
    """The groups file at ``path`` (written by `InferredGroups.save`); one-line errors if missing or damaged."""
    path = Path(path).expanduser()
    meta_path = path.with_suffix(".json")
    write_hint = f"write them with `grouprobust infer-groups --from RUN --out {path}`"
    if not path.is_file():
        what = "is a folder, not a groups file" if path.is_dir() else "not found"
        raise GroupRobustError(f"groups file {path} {what}; {write_hint}", subject="hparam:train_groups")
    if not meta_path.is_file():
        raise GroupRobustError(f"{meta_path.name}, which says what made the groups, is missing beside {path}; "
                               f"{write_hint}", subject="hparam:train_groups")
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GroupRobustError(f"{meta_path} is not an inferred-groups file", subject="hparam:train_groups")
    try:
        with np.load(path, allow_pickle=False) as z:
            attribute, confidence = z["attribute"], z["confidence"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise GroupRobustError(f"{path} cannot be read ({type(err).__name__}); infer the groups again",
                               subject="hparam:train_groups") from None
    _check_groups_file(path, meta_path, meta, attribute, confidence, write_hint)
    return InferredGroups(attribute, confidence, int(meta["n_attrs"]), meta["method"], meta["dataset"], meta["data"],
                          int(meta["seed"]), meta.get("params", {}), meta.get("source", ""), meta.get("info", {}),
                          meta.get("rows_fingerprint", ""))


def _check_groups_file(path: Path, meta_path: Path, meta: dict[str, Any], attribute: np.ndarray,
                       confidence: np.ndarray, write_hint: str) -> None:
    """Raise a one-line error naming the file and the fix when a groups file's contents do not hold
    together: keys missing from its ``.json``, attributes outside ``0..n_attrs-1``, lengths that differ."""
    kinds = {"n_attrs": int, "method": str, "dataset": str, "data": dict, "seed": int}
    bad = [k for k, kind in kinds.items() if not isinstance(meta.get(k), kind) or isinstance(meta.get(k), bool)]
    if bad:
        raise GroupRobustError(f"{meta_path} lacks a valid {bad[0]}; the groups file is damaged: {write_hint}",
                               subject="hparam:train_groups")
    n_attrs = meta["n_attrs"]
    if attribute.ndim != 1 or confidence.shape != attribute.shape or not np.issubdtype(attribute.dtype, np.integer):
        raise GroupRobustError(f"{path} holds arrays of the wrong shape or type (attribute {attribute.dtype} "
                               f"{attribute.shape}, confidence {confidence.shape}); the groups file is damaged: "
                               f"{write_hint}", subject="hparam:train_groups")
    if len(attribute) and (attribute.min() < 0 or attribute.max() >= n_attrs):
        raise GroupRobustError(f"{path} holds attribute values {int(attribute.min())}..{int(attribute.max())}, but "
                               f"{meta_path.name} says there are {n_attrs} (0..{n_attrs - 1}); the groups file is "
                               f"damaged or edited: {write_hint}", subject="hparam:train_groups")


# -- the inference methods -----------------------------------------------------------------------------

@dataclass(frozen=True)
class InferenceMethod:
    """An inference method: ``fn(reference, params, seed) -> (attribute, confidence, n_attrs, info)``,
    its declared parameters and whether it reads validation group labels."""

    name: str
    fn: Callable[..., tuple[np.ndarray, np.ndarray, int, dict[str, Any]]]
    params: dict[str, Param]
    summary: str
    reads_val_groups: bool = False


#: Every inference method by name, in the order they are defined below.
INFERENCE_METHODS: Registry[InferenceMethod] = Registry("group-inference method", subject="method")


def register_inference(name: str, summary: str, params: dict[str, Param] | None = None,
                       reads_val_groups: bool = False) -> Callable:
    """Decorator registering ``fn(reference, params, seed) -> (attribute, confidence, n_attrs, info)`` as
    the inference method ``name`` with its declared parameters."""

    def wrap(fn: Callable) -> Callable:
        INFERENCE_METHODS.add(name, InferenceMethod(name, fn, dict(params or {}), summary, reads_val_groups))
        return fn

    return wrap


def _probabilities(reference: TrainedRun, ds: GroupDataset) -> np.ndarray:
    return torch.softmax(predict_logits(reference.model, ds.x, reference.device).double(), dim=1).numpy()


def _true_label_confidence(reference: TrainedRun) -> np.ndarray:
    train = reference.splits.train
    return _probabilities(reference, train)[np.arange(len(train)), train.y]


@register_inference("errors", "JTT's split: samples the reference model misclassifies")
def _errors(reference: TrainedRun, p: dict[str, Any], seed: int):
    train = reference.splits.train
    probs = _probabilities(reference, train)
    wrong = probs.argmax(axis=1) != train.y
    return wrong.astype(np.int64), probs.max(axis=1), 2, {"n_errors": int(wrong.sum())}


@register_inference("confidence", "GERNE's pseudo-attributes: low confidence on the true label", {
    "threshold": Param(0.9, None, "flag samples whose confidence on the true label is at most this", FRACTION)})
def _confidence(reference: TrainedRun, p: dict[str, Any], seed: int):
    conf = _true_label_confidence(reference)
    flagged = conf <= p["threshold"]
    return flagged.astype(np.int64), np.abs(conf - p["threshold"]) / max(p["threshold"], 1 - p["threshold"]), 2, \
        {"n_flagged": int(flagged.sum())}


def _per_class_clusters(points: np.ndarray, y: np.ndarray, n_classes: int, k: int, algorithm: str, seed: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``points`` within each class into ``k`` clusters, numbered by size (0 = largest)."""
    attribute = np.zeros(len(y), dtype=np.int64)
    confidence = np.ones(len(y))
    for c in range(n_classes):
        idx = np.flatnonzero(y == c)
        if len(idx) < k:
            continue
        z = points[idx]
        z = (z - z.mean(axis=0)) / np.where(z.std(axis=0) > 1e-12, z.std(axis=0), 1.0)
        if algorithm == "gmm":
            model = GaussianMixture(k, covariance_type="diag", random_state=seed, reg_covar=1e-4).fit(z)
            post = model.predict_proba(z)
        else:
            model = KMeans(k, n_init=4, random_state=seed).fit(z)
            dist = model.transform(z)
            post = np.exp(-(dist - dist.min(axis=1, keepdims=True)))
            post /= post.sum(axis=1, keepdims=True)
        label = post.argmax(axis=1)
        order = np.argsort(-np.bincount(label, minlength=k), kind="stable")  # largest cluster -> 0
        rank = np.empty(k, dtype=np.int64)
        rank[order] = np.arange(k)
        attribute[idx] = rank[label]
        confidence[idx] = post.max(axis=1)
    return attribute, confidence


@register_inference("cluster", "George-style clustering of the reference model's features within each class", {
    "k": Param(2, None, "clusters per class", Interval(2, 16)),
    "algorithm": Param("kmeans", None, "kmeans or gmm (Gaussian mixture, diagonal covariances)",
                       Choice(("kmeans", "gmm")))})
def _cluster(reference: TrainedRun, p: dict[str, Any], seed: int):
    feats, _ = reference.features()
    train = feats.train
    a, conf = _per_class_clusters(train.x, train.y, train.n_classes, p["k"], p["algorithm"], seed)
    return a, conf, p["k"], {"space": "features"}


@register_inference("spare", "SPARE: k-means of the (early-epoch) reference model's outputs within each class",
                    {"k": Param(2, None, "clusters per class", Interval(2, 16))})
def _spare(reference: TrainedRun, p: dict[str, Any], seed: int):
    train = reference.splits.train
    a, conf = _per_class_clusters(_probabilities(reference, train), train.y, train.n_classes, p["k"], "kmeans", seed)
    return a, conf, p["k"], {"space": "outputs"}


def irm_penalty_terms(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cross-entropy and its derivative in the IRMv1 dummy scale ``w`` at ``w = 1``:
    ``d/dw CE(w z, y) = sum_k (softmax(z)_k - [k = y]) z_k``."""
    logits = logits.double()
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    resid = torch.softmax(logits, dim=1)
    resid[torch.arange(len(y)), y] -= 1.0
    return loss, (resid * logits).sum(dim=1)


def eiil_assignment(grad: torch.Tensor, steps: int = 2000, lr: float = 0.01, seed: int = 0) -> np.ndarray:
    """Soft assignment ``q`` of each sample to environment 1 (of 2) maximising the IRMv1 penalty of
    the two environments' risks, ``(sum_i q_i g_i / n)^2 + (sum_i (1 - q_i) g_i / n)^2``, where ``g`` are
    the per-sample scale gradients (EIIL's environment inference step, Creager et al. 2021: each
    environment's risk is the assignment-weighted loss averaged over all ``n`` samples, as in their
    code; normalising by the environment's own size instead makes one-sample environments optimal).
    Starts from standard-normal logits (seeded); returns ``q`` in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    logit_q = torch.randn(len(grad), generator=generator, dtype=torch.float64).requires_grad_()
    opt = torch.optim.Adam([logit_q], lr=lr)
    g = grad.detach().double()
    n = len(g)
    for _ in range(steps):
        q = torch.sigmoid(logit_q)
        penalty = ((q * g).sum() / n) ** 2 + (((1 - q) * g).sum() / n) ** 2
        opt.zero_grad()
        (-penalty).backward()
        opt.step()
    return torch.sigmoid(logit_q).detach().numpy()


@register_inference("eiil", "EIIL: two environments maximising the IRMv1 penalty of the reference model", {
    "steps": Param(2000, None, "Adam steps of the environment assignment", Interval(1)),
    "lr": Param(0.01, None, "learning rate of the assignment logits", Interval(0, None, lo_open=True))})
def _eiil(reference: TrainedRun, p: dict[str, Any], seed: int):
    train = reference.splits.train
    logits = predict_logits(reference.model, train.x, reference.device)
    _, grad = irm_penalty_terms(logits, torch.as_tensor(train.y))
    q = eiil_assignment(grad, p["steps"], p["lr"], seed)
    env = (q > 0.5).astype(np.int64)
    # number environments so that 0 is the larger (the majority, bias-aligned environment)
    if env.sum() > len(env) / 2:
        env, q = 1 - env, 1 - q
    return env, np.abs(q - 0.5) * 2, 2, {"env_sizes": np.bincount(env, minlength=2).tolist()}


@register_inference("ssa", "SSA: attribute predictor from half the group-labelled validation split, self-trained on "
                    "train", {
    "C": Param(1.0, None, "inverse L2 strength of the attribute predictor", Interval(0, None, lo_open=True)),
    "tau": Param(0.95, None, "confidence above which training samples are pseudo-labelled", FRACTION),
    "rounds": Param(2, None, "self-training rounds", Interval(0, 10))}, reads_val_groups=True)
def _ssa(reference: TrainedRun, p: dict[str, Any], seed: int):
    feats, _ = reference.features()
    val, train = feats.val, feats.train
    if val.a is None:
        raise GroupRobustError("ssa needs attribute labels on the validation split; use a dataset with attributes",
                               subject="method")
    rng = np.random.default_rng(seed)
    fit_part = np.zeros(len(val), dtype=bool)
    for gid in np.unique(val.g):
        idx = rng.permutation(np.flatnonzero(val.g == gid))
        fit_part[idx[: (len(idx) + 1) // 2]] = True
    mean, std = train.x.mean(axis=0), np.where(train.x.std(axis=0) > 1e-12, train.x.std(axis=0), 1.0)
    z_train, z_val = (train.x - mean) / std, (val.x - mean) / std
    attribute = np.zeros(len(train), dtype=np.int64)
    confidence = np.ones(len(train))
    held_hits, held_n = 0, 0
    for c in range(train.n_classes):
        vi = np.flatnonzero((val.y == c) & fit_part)
        ti = np.flatnonzero(train.y == c)
        values = np.unique(val.a[vi])
        if len(values) < 2 or not len(ti):
            attribute[ti] = values[0] if len(values) else 0
            continue
        X, A = z_val[vi], val.a[vi]
        clf = LogisticRegression(C=p["C"], max_iter=2000, class_weight="balanced")
        for _ in range(p["rounds"]):
            clf.fit(X, A)
            probs = clf.predict_proba(z_train[ti])
            sure = probs.max(axis=1) >= p["tau"]
            X = np.vstack([z_val[vi], z_train[ti][sure]])
            A = np.concatenate([val.a[vi], clf.classes_[probs.argmax(axis=1)][sure]])
        clf.fit(X, A)
        probs = clf.predict_proba(z_train[ti])
        attribute[ti] = clf.classes_[probs.argmax(axis=1)]
        confidence[ti] = probs.max(axis=1)
        hi = np.flatnonzero((val.y == c) & ~fit_part)
        held_hits += int((clf.predict(z_val[hi]) == val.a[hi]).sum())
        held_n += len(hi)
    return attribute, confidence, train.n_attrs, {"heldout_val_accuracy": held_hits / held_n if held_n else None}




def infer_groups(method: str, reference: TrainedRun, params: dict[str, Any] | None = None, seed: int = 0
                 ) -> InferredGroups:
    """Inferred training groups of ``reference``'s dataset by ``method`` (see the module docstring).

    ``params`` are the method's parameters (checked against their declarations). When the training
    split carries true groups, ``info["quality"]`` holds `inference_quality` (reporting only).
    """
    spec = INFERENCE_METHODS.get_entry(method)
    resolved = resolve_params(spec.params, params, what="inference parameter", owner=f"inference {method!r}")
    attribute, confidence, n_attrs, info = spec.fn(reference, resolved, seed)
    groups = InferredGroups(np.asarray(attribute, dtype=np.int64), np.clip(np.asarray(confidence, float), 0, 1),
                            int(n_attrs), method, reference.config.dataset, dict(reference.config.data),
                            reference.config.seed, resolved, str(reference.path), dict(info),
                            rows_fingerprint(reference.splits.train))
    train = reference.splits.train
    if train.g is not None:
        groups.info["quality"] = inference_quality(groups.apply(train).g, train.g, train.n_groups, train.group_names)
    return groups


def inference_quality(inferred: np.ndarray, true: np.ndarray, n_true: int,
                      names: list[str] | None = None) -> dict[str, Any]:
    """How well inferred groups recover the true ones (fractions in [0, 1]; reporting only).

    ``adjusted_rand_index`` of the two partitions; each inferred group is matched to the true group
    most of its members belong to; per true group, ``precision`` (of the samples matched to it, the
    fraction truly in it) and ``recall`` (of its samples, the fraction matched to it); ``worst_group_recall``
    over the non-empty true groups.
    """
    inferred, true = np.asarray(inferred), np.asarray(true)
    matched = np.empty(len(inferred), dtype=np.int64)
    for k in np.unique(inferred):
        members = inferred == k
        matched[members] = np.bincount(true[members], minlength=n_true).argmax()
    per_group = {}
    recalls = []
    for g in range(n_true):
        truly, pred = true == g, matched == g
        if not truly.any():
            continue
        recall = float((pred & truly).sum() / truly.sum())
        precision = float((pred & truly).sum() / pred.sum()) if pred.any() else None
        recalls.append(recall)
        per_group[str(g)] = {"name": names[g] if names else str(g), "precision": precision, "recall": recall,
                             "n": int(truly.sum())}
    return {"adjusted_rand_index": float(adjusted_rand_score(true, inferred)), "per_group": per_group,
            "worst_group_recall": min(recalls) if recalls else None}
