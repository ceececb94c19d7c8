"""recordlinkage adapter: a linkage comparison as a ``recordlinkage`` compare feature.

Imported only by ``as_recordlinkage`` (recordlinkage loads scikit-learn); imports compare.base.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from recordlinkage.base import BaseCompareFeature

from linkage.compare.base import Comparison


class RecordLinkageFeature(BaseCompareFeature):
    """A comparison as a ``recordlinkage`` feature; its label is the comparison's name."""

    name = "linkage"
    description = "Chinese-aware multi-level comparison from linkage.compare"

    def __init__(self, comparison: Comparison, columns: Sequence[str]):
        super().__init__(list(columns), list(columns), label=comparison.name)
        self.comparison = comparison

    def _compute_vectorized(self, *args: pd.Series) -> np.ndarray:
        # recordlinkage passes the left columns, then the right ones, as Series
        k = len(self.labels_left)
        left = {c: s.to_numpy() for c, s in zip(self.labels_left, args[:k])}
        right = {c: s.to_numpy() for c, s in zip(self.labels_right, args[k:])}
        return self.comparison.compare(left, right)
