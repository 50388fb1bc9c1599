"""Datasets: `GroupDataset`, the registry, `load_dataset` and `from_table` (a user's table as a dataset)."""

from grouprobust.data.dataset import DatasetSplits, GroupDataset
from grouprobust.data.registry import (
    DatasetEntry,
    get_dataset_entry,
    list_datasets,
    load_dataset,
    register_dataset,
    resolve_dataset_options,
)

__all__ = [
    "DatasetEntry", "DatasetSplits", "GroupDataset", "get_dataset_entry", "list_datasets", "load_dataset",
    "from_table", "register_dataset", "resolve_dataset_options",
]


def __getattr__(name: str):
    # from_table imports pandas and scikit-learn: loaded on first use so `import grouprobust.data` stays cheap.
    if name == "from_table":
        from grouprobust.data.tabular import from_table

        return from_table
    raise AttributeError(f"module 'grouprobust.data' has no attribute {name!r}")
