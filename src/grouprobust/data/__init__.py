"""Datasets: `GroupDataset`, the registry and `load_dataset`."""

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
    "register_dataset", "resolve_dataset_options",
]
