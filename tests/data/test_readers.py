"""Readers of the public benchmarks: happy paths on tiny generated copies, and each error as one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grouprobust.data import load_dataset
from grouprobust.data.feature_store import save_feature_splits
from grouprobust.data.readers import read_benchmark
from grouprobust.data.readers.table import EVAL_PREFIX
from grouprobust.errors import GroupRobustError

from readers_fixtures import (
    write_cached_bert_inputs, write_celeba, write_civilcomments, write_dfa, write_image, write_metashift,
    write_multinli, write_waterbirds,
)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# -- Waterbirds ------------------------------------------------------------------------------------
def test_waterbirds_reads_groups_and_splits(tmp_path):
    t = read_benchmark("waterbirds", write_waterbirds(tmp_path, per_group=2))
    assert len(t.table) == 24
    counts = t.group_counts()
    assert (counts.to_numpy() == 2).all()
    assert list(counts.index) == ["landbird,land", "landbird,water", "waterbird,land", "waterbird,water"]
    meta = pd.read_csv(tmp_path / "metadata.csv")
    # group = 2 y + place, row by row
    np.testing.assert_array_equal(t.groups(), 2 * meta["y"].to_numpy() + meta["place"].to_numpy())
    assert t.table["path"].map(lambda p: p.startswith(str(tmp_path))).all()


def test_waterbirds_errors(tmp_path):
    with pytest.raises(GroupRobustError, match="metadata.csv not found") as e:
        read_benchmark("waterbirds", tmp_path)
    one_line(e)
    root = write_waterbirds(tmp_path)
    meta = pd.read_csv(root / "metadata.csv")
    meta.drop(columns="place").to_csv(root / "metadata.csv", index=False)
    with pytest.raises(GroupRobustError, match="missing column 'place'") as e:
        read_benchmark("waterbirds", root)
    one_line(e)
    meta.assign(y=meta["y"].replace(1, 3)).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(GroupRobustError, match=r"column 'y' has unexpected value 3 .*expected one of 0, 1"):
        read_benchmark("waterbirds", root)
    # no waterbird on land in the test split
    bad = meta[~((meta["split"] == 2) & (meta["y"] == 1) & (meta["place"] == 0))]
    bad.to_csv(root / "metadata.csv", index=False)
    with pytest.raises(GroupRobustError, match="split 'test' has no sample in group 'waterbird,land'") as e:
        read_benchmark("waterbirds", root)
    one_line(e)
    assert len(read_benchmark("waterbirds", root, allow_empty_groups="true").table) == len(bad)
    meta.to_csv(root / "metadata.csv", index=False)
    (root / meta["img_filename"][5]).unlink()
    with pytest.raises(GroupRobustError, match="img_5.jpg not found .*img_filename"):
        read_benchmark("waterbirds", root)
    assert len(read_benchmark("waterbirds", root, check_files=False).table) == len(meta)


# -- CelebA ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "txt"])
def test_celeba_both_formats(tmp_path, fmt):
    t = read_benchmark("celeba", write_celeba(tmp_path, fmt))
    assert (t.group_counts().to_numpy() == 2).all()
    assert t.group_names == ["not Blond_Hair,not Male", "not Blond_Hair,Male", "Blond_Hair,not Male",
                             "Blond_Hair,Male"]


def test_celeba_target_and_attribute_are_configurable(tmp_path):
    root = write_celeba(tmp_path)
    t = read_benchmark("celeba", root, target="Male", attribute="Smiling")
    attrs = pd.read_csv(root / "list_attr_celeba.csv")
    np.testing.assert_array_equal(t.table["y"], (attrs["Male"] == 1).astype(int))
    np.testing.assert_array_equal(t.table["a"], (attrs["Smiling"] == 1).astype(int))


def test_celeba_errors(tmp_path):
    root = write_celeba(tmp_path)
    with pytest.raises(GroupRobustError, match="missing column 'Wavy_Hair'"):
        read_benchmark("celeba", root, attribute="Wavy_Hair")
    attrs = pd.read_csv(root / "list_attr_celeba.csv")
    attrs["Male"] = attrs["Male"].astype(float)
    attrs.loc[3, "Male"] = 0.5
    attrs.to_csv(root / "list_attr_celeba.csv", index=False)
    with pytest.raises(GroupRobustError, match=r"column 'Male' has unexpected value 0.5 \(row 3\)"):
        read_benchmark("celeba", root)
    (root / "list_eval_partition.csv").unlink()
    with pytest.raises(GroupRobustError, match=r"list_eval_partition.csv not found \(or list_eval_partition.txt\)"):
        read_benchmark("celeba", root)


# -- MultiNLI ------------------------------------------------------------------------------------------
def test_multinli_reads_labels_negation_and_text(tmp_path):
    t = read_benchmark("multinli", write_multinli(tmp_path))
    assert t.n_classes == 3 and t.input_kind == "text"
    assert (t.group_counts().to_numpy() == 2).all()
    # the text is recovered through the metadata index, skipping the unlabeled rows of the corpus
    has_nobody = t.table["text"].str.contains("nobody")
    np.testing.assert_array_equal(has_nobody.to_numpy(), t.table["a"].to_numpy() == 1)
    assert not t.table["text"].str.contains("unlabeled").any()


def test_multinli_errors(tmp_path):
    root = write_multinli(tmp_path, text=False)
    with pytest.raises(GroupRobustError, match="cached_train_bert-base-uncased_128_mnli not found"):
        read_benchmark("multinli", root)
    with pytest.raises(GroupRobustError, match="unknown split_type 'official'"):
        read_benchmark("multinli", root, split_type="official")
    write_multinli(tmp_path / "b")
    path = tmp_path / "b" / "data" / "metadata_random.csv"
    df = pd.read_csv(path, index_col=0)
    df.assign(gold_label=df["gold_label"].replace(2, "neutral")).to_csv(path)
    with pytest.raises(GroupRobustError, match="column 'gold_label' has unexpected value 'neutral'"):
        read_benchmark("multinli", tmp_path / "b")


def test_multinli_cached_bert_inputs_are_read(tmp_path):
    """Group DRO's cache pickles objects of its own InputFeatures class; they load without that class."""
    from grouprobust.data.readers.multinli import CACHED, load_cached_bert_inputs

    glue = write_cached_bert_inputs(tmp_path, [0, 1, 10, 11, 20, 21], [0, 1, 1, 2, 2, 0])
    arrays = load_cached_bert_inputs(tmp_path)
    np.testing.assert_array_equal(arrays["input_ids"][:, 1], [0, 1, 10, 11, 20, 21])
    np.testing.assert_array_equal(arrays["labels"], [0, 1, 1, 2, 2, 0])
    assert arrays["attention_mask"].shape == (6, 3)
    (glue / CACHED[1]).write_bytes(b"not a pickle")
    with pytest.raises(GroupRobustError, match="cannot be read as group DRO's cached InputFeatures"):
        load_cached_bert_inputs(tmp_path)


# -- CivilComments ----------------------------------------------------------------------------------------
def test_civilcomments_groups_and_overlapping_eval_groups(tmp_path):
    t = read_benchmark("civilcomments", write_civilcomments(tmp_path, per_group=3))
    assert (t.group_counts().to_numpy() == 3).all()
    names = t.eval_group_names
    assert len(names) == 16 and names[0] == "male,non-toxic"
    eg = t.table[[EVAL_PREFIX + n for n in names]].to_numpy()
    mentioned = eg.sum(axis=1)
    assert mentioned.max() == 2  # a comment can belong to two identity groups
    # identity_any (training attribute) == mentions at least one identity
    np.testing.assert_array_equal(mentioned > 0, t.table["a"].to_numpy() == 1)
    # eval groups are identity x y: toxic comments only in the ",toxic" columns
    toxic_cols = [i for i, n in enumerate(names) if n.endswith(",toxic")]
    assert (eg[t.table["y"].to_numpy() == 0][:, toxic_cols] == 0).all()
    splits = t.to_splits(np.zeros((len(t.table), 3), dtype=np.float32))
    assert splits.test.eval_groups.shape == (12, 16)


def test_civilcomments_errors(tmp_path):
    root = write_civilcomments(tmp_path)
    path = root / "civilcomments_v1.0" / "all_data_with_identities.csv"
    df = pd.read_csv(path)
    with pytest.raises(GroupRobustError, match="missing column 'religion' chosen as the attribute"):
        read_benchmark("civilcomments", root, attribute="religion")
    df.assign(toxicity=df["toxicity"].astype(object).where(df.index != 4, "high")).to_csv(path, index=False)
    with pytest.raises(GroupRobustError, match=r"column 'toxicity' has unexpected value 'high' \(row 4\)"):
        read_benchmark("civilcomments", root)
    df.assign(split=df["split"].replace("val", "validation")).to_csv(path, index=False)
    with pytest.raises(GroupRobustError, match="column 'split' has unexpected value 'validation'"):
        read_benchmark("civilcomments", root)
    df.drop(columns="muslim").to_csv(path, index=False)
    with pytest.raises(GroupRobustError, match="missing column 'muslim'"):
        read_benchmark("civilcomments", root)


# -- MetaShift ----------------------------------------------------------------------------------------------
def test_metashift_from_folders_and_from_subpopbench_csv(tmp_path):
    t = read_benchmark("metashift", write_metashift(tmp_path / "a", per_folder=40))
    assert len(t.table) == 160
    counts = t.group_counts()
    assert counts.loc["cat,indoor"].sum() == 40 and counts.loc["dog,indoor"].sum() == 40
    # SubpopBench's fractions: 25% test, 10% val
    assert (t.table["split"] == "test").sum() == 40 and (t.table["split"] == "val").sum() == 16
    t2 = read_benchmark("metashift", write_metashift(tmp_path / "b", per_folder=3, csv=True))
    # absolute file names from another machine are re-rooted under --root
    assert t2.table["path"].map(lambda p: p.startswith(str(tmp_path / "b"))).all()
    assert (t2.group_counts().to_numpy() == 1).all()


def test_metashift_errors(tmp_path):
    with pytest.raises(GroupRobustError, match=r"cat\(indoor\) not found"):
        read_benchmark("metashift", tmp_path)
    root = write_metashift(tmp_path / "c", per_folder=3, csv=True)
    df = pd.read_csv(root / "metadata_metashift.csv")
    df.assign(a=df["a"].replace(1, "indoor")).to_csv(root / "metadata_metashift.csv", index=False)
    with pytest.raises(GroupRobustError, match="column 'a' has unexpected value 'indoor'"):
        read_benchmark("metashift", root)


# -- DFA layout (GERNE): colored MNIST, corrupted CIFAR-10, bFFHQ ----------------------------------------
@pytest.mark.parametrize("name,kind", [("colored-mnist", "cmnist"), ("colored-cifar10", "cifar10c"),
                                       ("bffhq", "bffhq")])
def test_dfa_layouts(tmp_path, name, kind):
    t = read_benchmark(name, write_dfa(tmp_path, kind), pct="1pct")
    k = t.n_classes
    train = t.table[t.table["split"] == "train"]
    assert len(train) == 4 * k
    assert (train["y"] == train["a"]).sum() == 3 * k  # the aligned images
    counts = t.group_counts()
    assert (counts["val"] == 1).all() and (counts["test"] == 1).all()
    if k > 2:  # training conflicting groups may be empty: reported, not an error
        assert (counts["train"] == 0).sum() == k * k - 2 * k


def test_dfa_errors(tmp_path):
    root = write_dfa(tmp_path / "m", "cmnist")
    with pytest.raises(GroupRobustError, match="0.5pct not found; expected the bias-conflicting ratio folder"):
        read_benchmark("colored-mnist", root)
    write_image(root / "1pct" / "align" / "0" / "bad-name.png")
    with pytest.raises(GroupRobustError, match=r"bad-name.png: file name does not end in _<class>_<attribute>"):
        read_benchmark("colored-mnist", root, pct="1pct")
    (root / "1pct" / "align" / "0" / "bad-name.png").unlink()
    write_image(root / "1pct" / "align" / "0" / "7_0_12.png")
    with pytest.raises(GroupRobustError, match="attribute 12 out of range"):
        read_benchmark("colored-mnist", root, pct="1pct")
    (root / "1pct" / "align" / "0" / "7_0_12.png").unlink()
    for p in (root / "test").rglob("*_3_4.png"):
        p.unlink()
    with pytest.raises(GroupRobustError, match="split 'test' has no sample in group 'digit 3,color 4'"):
        read_benchmark("colored-mnist", root, pct="1pct")


# -- registry and CLI -------------------------------------------------------------------------------------
def test_unknown_benchmark_and_option(tmp_path):
    with pytest.raises(GroupRobustError, match="unknown benchmark 'waterbird' .*did you mean 'waterbirds'"):
        read_benchmark("waterbird", tmp_path)
    with pytest.raises(GroupRobustError, match="unknown option for benchmark 'celeba': 'targt'"):
        read_benchmark("celeba", tmp_path, targt="Male")


def test_features_directory_trains_through_the_registry(tmp_path):
    t = read_benchmark("waterbirds", write_waterbirds(tmp_path / "wb", per_group=3))
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((len(t.table), 5)).astype(np.float32)
    feats[:, 0] += 3 * t.table["y"].to_numpy()
    splits = t.to_splits(feats)
    splits.name = "waterbirds"
    np.testing.assert_array_equal(splits.train.x, feats[(t.table["split"] == "train").to_numpy()])
    save_feature_splits(splits, tmp_path / "feats")
    loaded = load_dataset("waterbirds", 0, features=str(tmp_path / "feats"))
    np.testing.assert_array_equal(loaded.test.g, splits.test.g)
    with pytest.raises(GroupRobustError, match="extract features first with `grouprobust features"):
        load_dataset("waterbirds", 0)
    with pytest.raises(GroupRobustError, match="holds features of 'waterbirds', not 'celeba'"):
        load_dataset("celeba", 0, features=str(tmp_path / "feats"))


def test_cli_check_prints_group_counts(tmp_path, capsys):
    from grouprobust.cli import main

    root = write_waterbirds(tmp_path, per_group=2)
    with pytest.raises(SystemExit) as ex:
        main(["datasets", "--check", "waterbirds", "--root", str(root)])
    assert ex.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "│ waterbird,water │ 2 │ 2 │ 2 │" in out and "the layout is valid" in out
    with pytest.raises(SystemExit) as ex:
        main(["datasets", "--check", "waterbirds", "--root", str(tmp_path / "nope")])
    assert ex.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "nope is not a directory" in err and "Traceback" not in err
