"""Clerical review: review queue, labels, refit from labels, threshold trade-off, suspect
clusters and a labelling session.

The public surface is this module's ``__all__`` (pinned by a test); the sub-modules are
``labels`` (the one label vocabulary, reader and writer), ``queue``, ``session``, ``refit``,
``tradeoff`` and ``clusters``. Charts and the ipywidgets labelling UI live in
``linkage.viz`` (extra ``notebooks``). Never imports the Linker, CLI or store.
"""

from __future__ import annotations

from linkage.review.clusters import suspect_clusters
from linkage.review.labels import (
    LABEL_COLUMNS,
    LABEL_VALUES,
    MATCH,
    NON_MATCH,
    UNSURE,
    add_label,
    empty_labels,
    label_rows,
    labels_from_truth,
    load_labels,
    normalize_labels,
    remove_label,
    save_labels,
    training_labels,
)
from linkage.review.queue import rescore_pairs, review_queue, side_by_side, threshold_weight
from linkage.review.refit import fit_from_labels
from linkage.review.session import ReviewSession
from linkage.review.tradeoff import (
    best_threshold,
    expected_tradeoff,
    labelled_tradeoff,
)

__all__ = [
    "LABEL_COLUMNS",
    "LABEL_VALUES",
    "MATCH",
    "NON_MATCH",
    "UNSURE",
    "ReviewSession",
    "add_label",
    "best_threshold",
    "empty_labels",
    "expected_tradeoff",
    "fit_from_labels",
    "label_rows",
    "labelled_tradeoff",
    "labels_from_truth",
    "load_labels",
    "normalize_labels",
    "remove_label",
    "rescore_pairs",
    "review_queue",
    "save_labels",
    "side_by_side",
    "suspect_clusters",
    "threshold_weight",
    "training_labels",
]
