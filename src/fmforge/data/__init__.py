"""Versioned datasets: tables in the object store, versions as events, lineage by row id."""

from fmforge.data.tables import (
    DatasetDiff,
    diff_datasets,
    export_dataset,
    export_table,
    head,
    query,
    where,
)
from fmforge.data.versions import (
    AddResult,
    add_dataset,
    commit_table,
    dataset_log,
    list_datasets,
    merge_datasets,
    read_table,
    resolve,
)
from fmforge.data.views import DatasetVersion

__all__ = [
    "AddResult",
    "DatasetDiff",
    "DatasetVersion",
    "add_dataset",
    "commit_table",
    "dataset_log",
    "diff_datasets",
    "export_dataset",
    "export_table",
    "head",
    "list_datasets",
    "merge_datasets",
    "query",
    "read_table",
    "resolve",
    "where",
]
