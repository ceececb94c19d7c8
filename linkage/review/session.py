"""A labelling session over a review queue: resume, label, skip, undo, retrain and re-rank.

No widgets here: ``linkage.viz.review_widget`` draws buttons and keyboard shortcuts over a
session, and scripts or tests call the same methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.compare import Comparison
from linkage.errors import InputError
from linkage.model import FellegiSunterModel
from linkage.review.labels import (
    KEY_COLUMNS,
    LABEL_VALUES,
    add_label,
    load_labels,
    normalize_labels,
    remove_label,
    save_labels,
)
from linkage.review.queue import rescore_pairs, review_queue
from linkage.review.refit import fit_from_labels


class ReviewSession:
    """Walk a review queue, label each pair (match / non-match / unsure), save after each label.

    ``queue`` is a ``review_queue`` table (``PAIR_KEYS`` + a scored pair per row). Labels
    already in ``labels_path`` are loaded and the session starts at the first pair without
    one, so reopening a half-done review resumes where it stopped. Every action can be undone.
    Given the run's scored ``pairs`` (and ``identities``), :meth:`retrain` refits the model
    from the labels and re-ranks the rest of the queue under it (uncertainty sampling, as in
    dedupe's active learning).
    """

    def __init__(
        self,
        queue: pd.DataFrame,
        records: pd.DataFrame,
        model: FellegiSunterModel,
        comparisons: Sequence[Comparison],
        labels_path: str | Path,
        *,
        pairs: pd.DataFrame | None = None,
        identities: pd.DataFrame | None = None,
        threshold: float = 0.9,
    ):
        self.queue = queue.reset_index(drop=True)
        self.records = records
        self.model = model
        self.comparisons = list(comparisons)
        self.labels_path = Path(labels_path)
        self.labels = load_labels(self.labels_path)
        self.pairs = pairs
        self.identities = identities
        self.threshold = threshold
        self.history: list[tuple[int, pd.Series, str | None]] = []
        self._on_change: list[Callable[[], None]] = []
        self.position = self._next_unlabelled(0)

    # ------------------------------------------------------------------ state

    def _label_of(self) -> dict[tuple[str, ...], str]:
        return dict(
            zip(
                map(tuple, self.labels[KEY_COLUMNS].to_numpy()),
                self.labels[schema.LABEL],
                strict=True,
            )
        )

    def queue_labels(self) -> pd.Series:
        """The label of each queue row (``None`` where unlabelled), aligned with ``queue``."""
        if not len(self.queue):
            return pd.Series([], dtype=object)
        keys = normalize_labels(self.queue[KEY_COLUMNS].assign(**{schema.LABEL: "unsure"}))
        known = self._label_of()
        return pd.Series(
            [known.get(k) for k in map(tuple, keys[KEY_COLUMNS].to_numpy())], dtype=object
        )

    def _next_unlabelled(self, start: int) -> int:
        done = self.queue_labels().notna().to_numpy()
        todo = np.flatnonzero(~done[start:])
        return start + int(todo[0]) if len(todo) else len(self.queue)

    @property
    def current(self) -> pd.Series | None:
        """The pair under review, or None when the queue is done."""
        return self.queue.iloc[self.position] if self.position < len(self.queue) else None

    @property
    def reviewed(self) -> int:
        """How many queue pairs carry a label."""
        return int(self.queue_labels().notna().sum())

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change of position or labels (a widget redraws)."""
        self._on_change.append(callback)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Suspend redrawing (e.g. while labelling many pairs in code); redraw once at the end."""
        callbacks, self._on_change = self._on_change, []
        try:
            yield
        finally:
            self._on_change = callbacks
            self._changed()

    def _changed(self) -> None:
        for callback in self._on_change:
            callback()

    # ------------------------------------------------------------------ actions

    def label(self, value: str) -> None:
        """Label the current pair, save the labels file and move to the next unlabelled pair.

        Raises:
            InputError: the queue is finished, or ``value`` is not in ``LABEL_VALUES``.
        """
        pair = self.current
        if pair is None:
            raise InputError("the review queue is finished")
        if value not in LABEL_VALUES:
            raise InputError(f"label must be one of {LABEL_VALUES}, got {value!r}")
        key = normalize_labels(pd.DataFrame([{**pair[KEY_COLUMNS], schema.LABEL: "unsure"}]))
        before = self._label_of().get(tuple(key[KEY_COLUMNS].iloc[0]))
        self.history.append((self.position, pair, before))
        self.labels = add_label(self.labels, pair, value)
        save_labels(self.labels, self.labels_path)
        self.position = self._next_unlabelled(self.position + 1)
        self._changed()

    def skip(self) -> None:
        """Move to the next unlabelled pair without labelling this one."""
        if self.current is not None:
            self.history.append((self.position, self.current, "skip"))
        self.position = self._next_unlabelled(min(self.position + 1, len(self.queue)))
        self._changed()

    def undo(self) -> bool:
        """Take back the last label or skip: restore the pair's earlier label (or none), save,
        and show that pair again. Returns False when there is nothing to undo."""
        if not self.history:
            return False
        position, pair, before = self.history.pop()
        if before != "skip":
            if before is None:
                self.labels = remove_label(self.labels, pair)
            else:
                self.labels = add_label(self.labels, pair, before)
            save_labels(self.labels, self.labels_path)
        self.position = position
        self._changed()
        return True

    def retrain(
        self, *, band: float = 4.0, limit: int | None = None, **options: Any
    ) -> FellegiSunterModel:
        """Refit the model from the labels so far and re-rank the unlabelled pairs under it.

        ``options`` go to ``fit_from_labels`` (``keep_u``, ``prior_strength``, ...). Needs the
        run's scored ``pairs`` given at construction. Pairs already labelled keep their place
        at the front; the rest of the queue is rebuilt by ``review_queue`` from the re-scored
        pairs: unlabelled pairs within ``band`` bits of the threshold or in large clusters,
        closest first, at most ``limit`` (default: as many as were left). The session's model
        becomes the refitted one; the run's pairs are replaced by their re-scored copies.

        Raises:
            InputError: no scored ``pairs`` were given, or the labels cannot train
                (see ``fit_from_labels``).
        """
        if self.pairs is None:
            raise InputError("retrain needs the run's scored pairs: ReviewSession(..., pairs=)")
        new = fit_from_labels(self.model, self.records, self.comparisons, self.labels, **options)
        self.pairs = rescore_pairs(self.pairs, self.model, new)
        labelled = self.queue_labels().notna().to_numpy()
        done = self.queue[labelled]
        todo = review_queue(
            self.pairs,
            self.records,
            self.identities,
            threshold=self.threshold,
            band=band,
            limit=limit if limit is not None else max(int((~labelled).sum()), 1),
            exclude=self.labels,
        )
        self.queue = pd.concat([done, todo], ignore_index=True)
        self.model = new
        self.history.clear()  # positions refer to the old queue
        self.position = self._next_unlabelled(0)
        self._changed()
        return new
