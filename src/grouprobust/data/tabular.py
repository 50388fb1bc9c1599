"""A user's own table (CSV, TSV, parquet or an in-memory DataFrame) as a grouped dataset: ``table``.

`from_table(df_or_path, label=..., attribute=...)` turns one row per sample into `DatasetSplits`:

* **classes** are the sorted distinct values of the ``label`` column, named ``"<label>=<value>"``
  (``income=>50K``);
* **attributes** are the distinct combinations of the ``attribute`` column(s) (one name, a list, or
  comma-separated names), named ``"sex=Female"`` or ``"sex=Female & race=Black"`` for several; the
  groups are label x attribute combinations, numbered and named by `grouprobust.grouping.Grouper`
  (``"income=>50K,sex=Female"``);
* **splits** come from the ``split`` option's column (values train / val / test); by default
  (``split="auto"``) a column named ``split`` whose values are all train / val / test is that column
  (said in ``meta["split_note"]``, which the command line prints), and without one, or with
  ``split="none"``, the splits are seeded fractions ``val_fraction`` / ``test_fraction`` drawn within
  each group (so every split keeps the groups' proportions);
* **inputs** are every other column (or only ``features``), minus ``drop``: numeric columns are
  standardised and categorical ones (text, category, boolean) one-hot encoded by a scikit-learn
  ``ColumnTransformer`` fitted on the training split only.

Missing values: a missing label, attribute or split value is an error (the row cannot be placed in a
group), and so is an infinite numeric feature; a missing numeric feature is replaced by the training
median, a missing categorical feature becomes its own category ``"(missing)"``; a category not seen
in training encodes as all zeros.
Categorical features with more than ``max_levels`` categories keep the ``max_levels - 1`` most
frequent and pool the rest (scikit-learn's ``max_categories``).

The label and the attribute columns are never inputs. Every problem (missing column, a label with
one value, an attribute with hundreds of values, NaN in the label, an unknown split value) raises a
one-line `GroupRobustError` whose ``subject`` names the option (``data:label`` ...).

(Not to be confused with `grouprobust.data.readers.table.BenchmarkTable`, the public benchmarks'
metadata tables.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Sequence

import numpy as np
import pandas as pd

from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.data.raw_inputs import ImageSizeOption, MaxLengthOption, TokenizerOption, input_splits
from grouprobust.data.readers.table import BenchmarkTable
from grouprobust.data.registry import register_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.grouping import Grouper
from grouprobust.output import missing_file, read_text
from grouprobust.params import FRACTION, Interval

SPLITS = ("train", "val", "test")
MISSING_CATEGORY = "(missing)"
READERS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": None}


def read_table_file(path: Path | str) -> pd.DataFrame:
    """The table at ``path`` (``.csv``, ``.tsv``/``.tab`` or ``.parquet``) as a DataFrame.

    Raises a one-line `GroupRobustError` (subject ``data:path``) for a missing file, an unknown
    suffix or a file that cannot be parsed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise GroupRobustError(f"{missing_file(path, 'table')}; set path to a .csv, .tsv or .parquet file",
                               subject="data:path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in READERS:
            return pd.read_csv(path, sep=READERS[suffix], engine="python" if READERS[suffix] is None else "c",
                               skipinitialspace=True)
    except ImportError:
        raise GroupRobustError("reading parquet needs pyarrow: pip install 'grouprobust[parquet]'",
                               subject="data:path") from None
    except UnicodeDecodeError as err:
        read_text(path, "table", subject="data:path")  # raises, naming the encoding and the fix
        raise GroupRobustError(f"{path} cannot be read as a table ({err.reason}); check the file",
                               subject="data:path") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise GroupRobustError(f"{path} cannot be read as a table ({first}); check the file", subject="data:path") from None
    raise GroupRobustError(f"{path}: unsupported table type {suffix!r}; use .csv, .tsv or .parquet", subject="data:path")


def _names(value: str | Sequence[str] | None) -> list[str]:
    """Column names from a comma-separated string or a list (duplicates removed, order kept)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return list(dict.fromkeys(v.strip() for v in items if v.strip()))


def _require(frame: pd.DataFrame, columns: list[str], option: str) -> None:
    for col in columns:
        if col not in frame.columns:
            shown = ", ".join(map(str, list(frame.columns)[:12])) + (" ..." if frame.shape[1] > 12 else "")
            raise GroupRobustError(f"column {col!r} (dataset option {option}) is not in the table; the columns are: {shown}",
                                   subject=f"data:{option}")


def _value_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value).strip()


def _levels(series: pd.Series, option: str, max_levels: int) -> list[Any]:
    """The sorted distinct values of a label or attribute column; raises on missing or too many values."""
    missing = int(series.isna().sum())
    if missing:
        raise GroupRobustError(f"{option} column {series.name!r} has {missing} missing values; fill them or drop "
                               "those rows (a row without a value cannot be placed in a group)", subject=f"data:{option}")
    try:
        values = sorted(series.unique())
    except TypeError:  # mixed kinds (numbers and text in one column): order by their text
        values = sorted(series.unique(), key=_value_text)
    if len(values) > max_levels:
        raise GroupRobustError(f"{option} column {series.name!r} has {len(values)} distinct values, more than "
                               f"max_levels={max_levels}; use a coarser column or raise max_levels",
                               subject=f"data:{option}")
    return values


@dataclass
class TableEncoding:
    """How a table became a dataset: columns, class and attribute names, and the fitted input encoder.

    ``encoder`` is the scikit-learn ``ColumnTransformer`` fitted on the training rows (apply it to new
    rows with `transform`); ``feature_names`` are its output columns (``num__age``, ``cat__sex_Female``).
    """

    label: str
    attributes: list[str]
    class_names: list[str]
    attr_names: list[str]
    numeric: list[str]
    categorical: list[str]
    encoder: Any
    feature_names: list[str] = field(default_factory=list)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """The encoded inputs of ``frame`` (float32, one row per row, columns `feature_names`)."""
        return _encode(self.encoder, frame, self.numeric, self.categorical)


def _prepare(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    # Categorical cells as strings with an explicit missing category; numeric cells as floats (NaN kept for the imputer).
    out = pd.DataFrame(index=frame.index)
    for col in numeric:
        out[col] = _numeric_cells(frame, col)
    for col in categorical:
        cells = frame[col]
        out[col] = np.where(cells.isna(), MISSING_CATEGORY, cells.map(_value_text)).astype(object)
    return out


def _numeric_cells(frame: pd.DataFrame, column: str) -> pd.Series:
    """The numeric feature ``column`` of ``frame`` as floats (NaN kept for the imputer); a one-line error
    naming the column if a cell is infinite (an infinity cannot be standardised, and the imputer only
    fills missing cells)."""
    cells = pd.to_numeric(frame[column], errors="coerce").astype(float)
    infinite = int(np.isinf(cells.to_numpy()).sum())
    if infinite:
        raise GroupRobustError(f"feature column {column!r} of the table has {infinite} infinite values (inf or "
                               "-inf); replace them in the file (an empty cell is filled with the training median) "
                               f"or leave the column out with drop={column}", subject="data:path")
    return cells


def _encode(encoder: Any, frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> np.ndarray:
    x = encoder.transform(_prepare(frame, numeric, categorical))
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def _make_encoder(numeric: list[str], categorical: list[str], max_levels: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts = []
    if numeric:
        parts.append(("num", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                           StandardScaler()), numeric))
    if categorical:
        parts.append(("cat", OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=max_levels,
                                           sparse_output=False, dtype=np.float32), categorical))
    return ColumnTransformer(parts, sparse_threshold=0.0)


def _check_inputs_carry_values(frame: pd.DataFrame, inputs: list[str]) -> None:
    """Raise unless some input column holds a value: columns empty in every row would train on the fill
    values alone, and columns that all hold one value each on nothing."""
    empty = [c for c in inputs if frame[c].isna().all()]
    if len(empty) == len(inputs):
        shown = ", ".join(map(repr, empty[:6])) + (" ..." if len(empty) > 6 else "")
        raise GroupRobustError(f"every feature column of the table is empty ({shown}); a model would train on "
                               "nothing but fill values: fill them, or choose other columns with the dataset option "
                               "features", subject="data:features")
    if all(frame[c].nunique(dropna=False) <= 1 for c in inputs):
        raise GroupRobustError(f"every feature column of the table holds one value in every row "
                               f"({', '.join(map(repr, inputs[:6]))}); a model could learn nothing from them: choose "
                               "other columns with the dataset option features", subject="data:features")


def _split_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    cells = frame[column]
    if cells.isna().any():
        raise GroupRobustError(f"split column {column!r} has {int(cells.isna().sum())} missing values; give every "
                               "row train, val or test", subject="data:split")
    names = cells.map(lambda v: str(v).strip().lower()).to_numpy(dtype=object)
    unknown = sorted(set(names) - set(SPLITS))
    if unknown:
        raise GroupRobustError(f"split column {column!r} has value {unknown[0]!r}; its values must be train, val "
                               "or test", subject="data:split")
    for s in ("train", "val", "test"):
        if not (names == s).any():
            raise GroupRobustError(f"split column {column!r} has no {s!r} rows; every split needs rows",
                                   subject="data:split")
    return names


def _drawn_splits(groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """train/val/test per row, drawn within each group with ``seed`` (each group keeps its proportions)."""
    if val_fraction + test_fraction >= 1:
        raise GroupRobustError(f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}; "
                               "leave rows for training", subject="data:val_fraction")
    rng = np.random.default_rng(seed)
    out = np.full(len(groups), "train", dtype=object)
    for g in np.unique(groups):
        rows = rng.permutation(np.flatnonzero(groups == g))
        n_val, n_test = int(round(val_fraction * len(rows))), int(round(test_fraction * len(rows)))
        out[rows[:n_val]] = "val"
        out[rows[n_val:n_val + n_test]] = "test"
    for s in SPLITS:
        if not (out == s).any():
            raise GroupRobustError(f"the table is too small for a {s} split with val_fraction={val_fraction} and "
                                   f"test_fraction={test_fraction}; add rows or change the fractions",
                                   subject="data:val_fraction")
    return out


#: The ``split`` values that do not name a column: find a ``split`` column, or draw the splits.
AUTO_SPLIT, NO_SPLIT = "auto", "none"


def _auto_split_column(frame: pd.DataFrame) -> str | None:
    """``"split"`` if the table has a column of that name whose values are all train / val / test."""
    if "split" not in frame.columns or frame["split"].isna().any():
        return None
    values = set(frame["split"].map(lambda v: str(v).strip().lower()))
    return "split" if values and values <= set(SPLITS) else None


def from_table(table: pd.DataFrame | Path | str, *, label: str, attribute: str | Sequence[str],
               split: str | None = AUTO_SPLIT, features: str | Sequence[str] | None = None,
               drop: str | Sequence[str] | None = None, val_fraction: float = 0.2, test_fraction: float = 0.2,
               seed: int = 0, max_levels: int = 50, name: str = "table", image: str = "", text: str = "",
               root: str | Path = "", image_size: int = 0, tokenizer: str = "", max_length: int = 0) -> DatasetSplits:
    """Train/val/test `GroupDataset` splits of a table with one row per sample (see the module docstring).

    ``table``: a DataFrame or a path (``.csv``, ``.tsv``, ``.parquet``); ``label``: the class column;
    ``attribute``: the spurious attribute column(s); ``split``: a column of train/val/test, ``"auto"``
    (a column named ``split`` with only those values, if there is one) or ``"none"``/None (seeded
    fractions, drawn with ``seed``, whatever the columns); ``features``: the input columns (default every other
    column); ``drop``: columns to leave out; ``max_levels``: most distinct values allowed in the
    label or attribute columns, and most one-hot columns per categorical feature.

    Returns `DatasetSplits` whose inputs are float32 (standardised numerics, one-hot categoricals),
    with ``meta["table"]`` the `TableEncoding` and ``meta["feature_names"]`` the input columns.
    With ``image`` (a column of image paths, relative to ``root``, by default the table's folder) or
    ``text`` (a column of texts), that column alone is the input, trained end to end through a backbone:
    images at ``image_size`` px, texts tokenized by ``tokenizer`` (`grouprobust.data.raw_inputs`).
    """
    frame = read_table_file(table) if isinstance(table, (str, Path)) else table
    if not isinstance(frame, pd.DataFrame):
        raise GroupRobustError(f"table must be a pandas DataFrame or a path, got {type(frame).__name__}",
                               subject="data:path")
    frame = frame.reset_index(drop=True)
    if not label:
        raise GroupRobustError("set dataset option label to the column holding the class", subject="data:label")
    attributes = _names(attribute)
    if not attributes:
        raise GroupRobustError("set dataset option attribute to the column(s) holding the spurious attribute "
                               "(comma-separated for several)", subject="data:attribute")
    _require(frame, [label], "label")
    _require(frame, attributes, "attribute")
    if label in attributes:
        raise GroupRobustError(f"column {label!r} is both the label and an attribute; pick another attribute",
                               subject="data:attribute")
    split_note = ""
    if split == AUTO_SPLIT:
        split = _auto_split_column(frame)
        if split:
            split_note = ("splits: the table's column 'split' (train/val/test) gives them; set split=none to draw "
                          "them at random instead")
    elif split == NO_SPLIT:
        split = None
    if split:
        _require(frame, [split], "split")
    if image and text:
        raise GroupRobustError("give either image=COLUMN (image paths) or text=COLUMN (texts), not both",
                               subject="data:image")
    raw = image or text
    if raw:
        _require(frame, [raw], "image" if image else "text")
        if raw in (label, *attributes, split):
            raise GroupRobustError(f"column {raw!r} is the label, an attribute or the split and cannot be the "
                                   "input", subject=f"data:{'image' if image else 'text'}")
    dropped = _names(drop)
    _require(frame, dropped, "drop")
    reserved = {label, *attributes, *([split] if split else [])}
    if features is not None and _names(features):
        inputs = _names(features)
        _require(frame, inputs, "features")
        clash = [c for c in inputs if c in reserved]
        if clash:
            raise GroupRobustError(f"column {clash[0]!r} is the label, an attribute or the split and cannot be a "
                                   "feature; remove it from features", subject="data:features")
        inputs = [c for c in inputs if c not in dropped]
    else:
        inputs = [c for c in frame.columns if c not in reserved and c not in dropped]
    if not inputs and not raw:
        raise GroupRobustError("no feature columns are left after removing the label, attributes, split and drop; "
                               "keep at least one column as input", subject="data:features")
    if frame.empty:
        raise GroupRobustError("the table has no rows", subject="data:path")
    _check_inputs_carry_values(frame, inputs)

    classes = _levels(frame[label], "label", max_levels)
    if len(classes) < 2:
        raise GroupRobustError(f"label column {label!r} has one value ({_value_text(classes[0])!r}); a classifier "
                               "needs at least two classes", subject="data:label")
    y = frame[label].map({v: i for i, v in enumerate(classes)}).to_numpy(dtype=np.int64)
    codes, per_attr = [], []
    for col in attributes:
        levels = _levels(frame[col], "attribute", max_levels)
        per_attr.append([f"{col}={_value_text(v)}" for v in levels])
        codes.append(frame[col].map({v: i for i, v in enumerate(levels)}).to_numpy(dtype=np.int64))
    # Several attributes: the attribute is the observed combination, ordered by the columns' own value orders.
    combos, a = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
    a = a.reshape(-1).astype(np.int64)
    if len(combos) > max_levels:
        raise GroupRobustError(f"the attribute columns {', '.join(attributes)} have {len(combos)} distinct "
                               f"combinations, more than max_levels={max_levels}; use fewer or coarser columns",
                               subject="data:attribute")
    attr_names = [" & ".join(per_attr[j][c] for j, c in enumerate(combo)) for combo in combos]
    class_names = [f"{label}={_value_text(v)}" for v in classes]
    grouper = Grouper(len(classes), len(attr_names), class_names, attr_names)
    g = grouper.group_ids(y, a)

    split_of = _split_column(frame, split) if split else _drawn_splits(g, val_fraction, test_fraction, seed)
    if raw:
        base = Path(root).expanduser() if root else (Path(table).expanduser().parent
                                                     if isinstance(table, (str, Path)) else Path.cwd())
        return _raw_input_splits(frame, raw, bool(image), base, y, a, split_of, grouper, name,
                                 image_size=image_size, tokenizer=tokenizer, max_length=max_length)
    numeric = [c for c in inputs if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    categorical = [c for c in inputs if c not in numeric]
    for col in numeric:  # every row, before fitting: the error counts all the infinite cells, not the training ones
        _numeric_cells(frame, col)
    encoder = _make_encoder(numeric, categorical, max_levels)
    train_rows = split_of == "train"
    encoder.fit(_prepare(frame[train_rows], numeric, categorical))
    encoding = TableEncoding(label, attributes, class_names, attr_names, numeric, categorical, encoder,
                             [str(n) for n in encoder.get_feature_names_out()])
    x = encoding.transform(frame)
    meta = {"table": encoding, "feature_names": encoding.feature_names, "split_note": split_note,
            "source": {"path": str(table) if isinstance(table, (str, Path)) else "(DataFrame)"}}
    parts = [GroupDataset(x[split_of == s], y[split_of == s], a[split_of == s], grouper.n_classes, grouper.n_attrs,
                          s, name, group_names=grouper.names, meta={"feature_names": encoding.feature_names})
             for s in SPLITS]
    return DatasetSplits(*parts, name=name, description=f"table: {label} x {' & '.join(attributes)}", meta=meta)


def _raw_input_splits(frame: pd.DataFrame, column: str, images: bool, base: Path, y: np.ndarray, a: np.ndarray,
                      split_of: np.ndarray, grouper: Grouper, name: str, *, image_size: int, tokenizer: str,
                      max_length: int) -> DatasetSplits:
    """The splits of a table whose input is one column of image paths (relative to ``base``) or texts."""
    if frame[column].isna().any():
        row = int(np.flatnonzero(frame[column].isna().to_numpy())[0])
        raise GroupRobustError(f"column {column!r} is empty in row {row}; every row needs its "
                               f"{'image' if images else 'text'}", subject=f"data:{'image' if images else 'text'}")
    rows = pd.DataFrame({"y": y, "a": a, "split": split_of})
    if images:
        paths = [Path(p).expanduser() for p in frame[column].astype(str)]
        rows.insert(0, "path", [str(p if p.is_absolute() else base / p) for p in paths])
    else:
        rows.insert(0, "text", frame[column].astype(str).to_numpy())
    table = BenchmarkTable(name, rows, grouper.n_classes, grouper.n_attrs, grouper.class_names, grouper.attr_names,
                           base, input_kind="image" if images else "text")
    return input_splits(table, image_size=image_size, tokenizer=tokenizer, max_length=max_length,
                        source=base)


@register_dataset(
    "table",
    "Your own table (CSV, TSV or parquet): path=FILE label=COLUMN attribute=COLUMN[,COLUMN]; groups = label x "
    "attributes; numeric columns standardised, categorical one-hot (fitted on train)",
    train_defaults={"model": "mlp", "epochs": 20, "lr": 1e-3, "optimizer": "adam", "batch_size": 128},
    embedded=False,
    file_options=("path", "root"),
    later_options=("image", "text", "root", "image_size", "max_length", "tokenizer"),
    inputs_of=lambda options: "image" if options.get("image") else "text" if options.get("text") else "features",
)
def table_dataset(seed: int = 0, *,
                  path: Annotated[str, "the table: .csv, .tsv or .parquet"] = "",
                  label: Annotated[str, "column holding the class"] = "",
                  attribute: Annotated[str, "spurious attribute column(s), comma-separated"] = "",
                  split: Annotated[str, "column of train/val/test; auto: the column named split if its values "
                                        "are all train/val/test, else seeded fractions; none: seeded fractions"
                                   ] = AUTO_SPLIT,
                  features: Annotated[str, "input columns, comma-separated (default: every other column)"] = "",
                  drop: Annotated[str, "columns to leave out, comma-separated"] = "",
                  val_fraction: Annotated[float, FRACTION, "validation share without a split column"] = 0.2,
                  test_fraction: Annotated[float, FRACTION, "test share without a split column"] = 0.2,
                  max_levels: Annotated[int, Interval(2), "most distinct label/attribute values"] = 50,
                  image: Annotated[str, "column of image paths, trained end to end through a backbone"] = "",
                  text: Annotated[str, "column of texts, trained end to end through a backbone"] = "",
                  root: Annotated[str, "folder the image paths are relative to (default: the table's)"] = "",
                  image_size: ImageSizeOption = 0, max_length: MaxLengthOption = 0, tokenizer: TokenizerOption = "",
                  ) -> DatasetSplits:
    """The table at ``path`` as a grouped dataset (`from_table`); the seed draws the splits without ``split``."""
    if not path:
        raise GroupRobustError("dataset 'table' needs a file: set the dataset option path=FILE (a .csv, .tsv or "
                               ".parquet table)", subject="data:path")
    return from_table(path, label=label, attribute=attribute, split=split or NO_SPLIT, features=features or None,
                      drop=drop or None, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                      max_levels=max_levels, image=image, text=text, root=root, image_size=image_size,
                      tokenizer=tokenizer, max_length=max_length)


__all__ = ["TableEncoding", "from_table", "read_table_file", "table_dataset"]
