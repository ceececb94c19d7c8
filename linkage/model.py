"""Fellegi–Sunter match model: u by sampling, m and lambda by EM, scoring, explanations, JSON I/O.

Pure numpy/pandas; imports no linkage module except ``linkage.schema`` and ``linkage.errors``.
Fitting is self-contained: each ``fit*`` method takes the data it needs as arguments and
sets only its own fitted ``*_`` attributes. The training policy (which pairs, which rules)
is ``linkage.training``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from linkage.errors import InputError, NotFittedError
from linkage.schema import GAMMA_PREFIX, MATCH_PROBABILITY, MATCH_WEIGHT, MW_PREFIX

logger = logging.getLogger(__name__)

# Version 2 adds the resolved run settings (comparison specs, blocking, standardize) in
# ``settings``; version 1 files still load.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
MODEL_KIND = "fellegi_sunter"
PRIOR_ROW = "prior"
# Patterns are counted with np.bincount over a mixed-radix key while the key space stays
# below this size (O(n), no sort); above it, np.unique over the keys (a sort) is used.
_BINCOUNT_MAX_KEYS = 1 << 24
_LAMBDA_CLIP = 1e-12


def match_probability(weight: np.ndarray | float) -> np.ndarray:
    """Return 2^w / (1 + 2^w) without overflow for any finite or infinite weight."""
    w = np.asarray(weight, dtype=np.float64)
    # exp2 of a non-positive number never overflows; pick the form that keeps it so.
    e = np.exp2(-np.abs(w))
    return np.where(w >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def probability_two_random_records_match(
    vectors: pd.DataFrame,
    rules: Sequence[Mapping[str, int]],
    n_records: int,
    recall: float = 1.0,
) -> float:
    """Splink's prior: the probability that two records drawn at random are one person.

    Candidate pairs (``vectors``, ``gamma_<name>`` columns) meeting any rule ({comparison:
    minimum level}) count as matches, divided by the rules' assumed ``recall`` and by all
    n (n-1) / 2 record pairs; clipped to [1e-12, 0.5]. Not the match share among blocked
    pairs (lambda of EM): blocking concentrates matches, so this is far smaller.
    """
    hit = np.zeros(len(vectors), dtype=bool)
    for rule in rules:
        ok = np.ones(len(vectors), dtype=bool)
        for name, level in rule.items():
            ok &= vectors[GAMMA_PREFIX + name].to_numpy() >= level
        hit |= ok
    total = max(n_records * (n_records - 1) / 2, 1.0)
    prior = float(np.clip(max(hit.sum(), 1) / recall / total, 1e-12, 0.5))
    logger.info(
        "probability_two_random_records_match %.3g from %d rule hits", prior, int(hit.sum())
    )
    return prior


# Matching pairs the prior on m is worth (see FellegiSunterModel._with_m_prior).
_M_PRIOR_PAIRS = 0.2
# Expected matching pairs below which EM has not seen a level at all.
_UNSEEN_PAIRS = 0.5


def _smoothed_distribution(counts: np.ndarray, floor: float) -> np.ndarray:
    """Additive (Jeffreys, +0.5) smoothing, then lift every level to at least ``floor``."""
    k = len(counts)
    n = counts.sum()
    if n <= 0:
        return np.full(k, 1.0 / k)
    # +0.5 pseudo-counts: an unobserved level gets about 1/(2n) instead of 0, so its weight
    # log2(m/u) stays finite; near-miss ID levels are typically unobserved among random pairs.
    p = (counts + 0.5) / (n + 0.5 * k)
    return _apply_floor(p, floor)


def _apply_floor(p: np.ndarray, floor: float) -> np.ndarray:
    """Raise entries below ``floor`` to it and take the excess from the other entries."""
    p = np.asarray(p, dtype=np.float64)
    low = p < floor
    if not low.any():
        return p / p.sum()
    if low.all() or floor * len(p) >= 1.0:
        return np.full(len(p), 1.0 / len(p))
    out = p.copy()
    out[low] = floor
    free = ~low
    out[free] *= (1.0 - floor * low.sum()) / p[free].sum()
    return out


class FellegiSunterModel:
    """Fellegi–Sunter model over comparison vectors (``gamma_<name>`` int8 columns).

    Levels per comparison: -1 null (weight 0), 0 else, 1..K-1 increasingly close agreement.
    ``lambda_`` is the prior match probability of a scored pair. :meth:`fit` (EM) estimates
    it as the match share among the blocked pairs; :meth:`fit_sessions` uses Splink's
    ``probability_two_random_records_match``; :meth:`fit_supervised` the label share.
    ``prior``, when set, is ``lambda_`` for the last two and EM's starting value for the
    first. ``u_floor`` (default 1/(2n) of the sampled pairs) bounds u and term frequencies
    from below. ``tf_columns`` maps a
    comparison to its exact-agreement level, the one that gets term-frequency adjustment.
    Editing the result of :meth:`score` never edits its input.
    """

    def __init__(
        self,
        levels: dict[str, list[str]],
        *,
        prior: float | None = None,
        max_iter: int = 100,
        tol: float = 1e-5,
        m_floor: float = 1e-6,
        u_floor: float | None = None,
        tf_columns: dict[str, int] | None = None,
        settings: dict | None = None,
    ):
        self.levels = {str(k): [str(x) for x in v] for k, v in levels.items()}
        self.prior = prior
        self.max_iter = max_iter
        self.tol = tol
        self.m_floor = m_floor
        self.u_floor = u_floor
        self.tf_columns = dict(tf_columns or {})
        self.settings = settings
        self._validate_settings()

    # ------------------------------------------------------------------ validation helpers

    def _validate_settings(self) -> None:
        if not self.levels:
            raise ValueError("levels must name at least one comparison")
        for name, names in self.levels.items():
            if len(names) < 2:
                raise ValueError(
                    f"comparison '{name}' needs at least 2 levels (else + one agreement)"
                )
            if len(names) > 127:
                raise ValueError(f"comparison '{name}' has more levels than int8 can hold")
        for name, level in self.tf_columns.items():
            if name not in self.levels:
                raise ValueError(f"tf_columns names unknown comparison '{name}'")
            if not 1 <= int(level) < len(self.levels[name]):
                raise ValueError(
                    f"tf_columns['{name}'] = {level}: must be an agreement level "
                    f"1..{len(self.levels[name]) - 1}"
                )
        if self.prior is not None and not 0.0 < self.prior < 1.0:
            raise ValueError(f"prior must lie strictly between 0 and 1, got {self.prior}")
        if self.m_floor <= 0 or (self.u_floor is not None and self.u_floor <= 0):
            raise ValueError("m_floor and u_floor must be positive")

    @property
    def comparisons(self) -> list[str]:
        """Comparison names in model order."""
        return list(self.levels)

    def _k(self, name: str) -> int:
        return len(self.levels[name])

    def _gamma_matrix(self, vectors: pd.DataFrame) -> np.ndarray:
        """Return the (n, C) int8 level matrix; missing values become -1; range is checked."""
        cols = []
        for name in self.comparisons:
            col = GAMMA_PREFIX + name
            if col not in vectors.columns:
                raise InputError(f"comparison vectors lack column '{col}'", column=col)
            s = vectors[col]
            if s.dtype == np.int8:
                arr = s.to_numpy()
            else:
                # Nullable / float columns: a missing level means a side is missing.
                arr = s.to_numpy(dtype=np.float64, na_value=np.nan)
                arr = np.where(np.isnan(arr), -1, arr).astype(np.int8)
            if len(arr):
                lo, hi = int(arr.min()), int(arr.max())
                if lo < -1 or hi >= self._k(name):
                    raise InputError(
                        f"levels must lie in -1..{self._k(name) - 1}, found {lo}..{hi}",
                        column=col,
                    )
            cols.append(arr)
        return np.column_stack(cols) if cols else np.empty((len(vectors), 0), np.int8)

    def _patterns(self, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Group identical rows: (distinct patterns, counts).

        Same result as np.unique(gamma, axis=0, return_counts=True), but each row is packed
        into one int64 mixed-radix key first, so grouping is a bincount (or a 1-D sort).
        """
        radices = np.array([self._k(n) + 1 for n in self.comparisons], dtype=np.int64)
        if float(np.prod(radices.astype(np.float64))) >= 2.0**62:
            return np.unique(gamma, axis=0, return_counts=True)
        strides = np.ones(len(radices), dtype=np.int64)
        strides[:-1] = np.cumprod(radices[::-1])[::-1][1:]
        key = np.zeros(len(gamma), dtype=np.int64)
        for j in range(gamma.shape[1]):
            key += (gamma[:, j].astype(np.int64) + 1) * strides[j]
        space = int(np.prod(radices))
        if space <= _BINCOUNT_MAX_KEYS:
            counts = np.bincount(key, minlength=space)
            keys = np.flatnonzero(counts)
            counts = counts[keys]
        else:
            keys, counts = np.unique(key, return_counts=True)
        patterns = ((keys[:, None] // strides[None, :]) % radices[None, :] - 1).astype(np.int8)
        return patterns, counts.astype(np.float64)

    def _check_fitted(self) -> None:
        missing = [a for a in ("m_", "u_", "lambda_") if not hasattr(self, a)]
        if missing:
            raise NotFittedError(
                f"model has no {', '.join(missing)}: call estimate_u() then fit(), "
                "fit_supervised(), or FellegiSunterModel.load()"
            )

    def _u_floor_for(self, n: float) -> float:
        if self.u_floor is not None:
            return float(self.u_floor)
        return 1.0 / (2.0 * max(n, 1.0))

    # ------------------------------------------------------------------ estimation

    def estimate_u(self, vectors: pd.DataFrame) -> FellegiSunterModel:
        """Estimate u-probabilities from comparison vectors of randomly sampled record pairs."""
        gamma = self._gamma_matrix(vectors)
        self.u_ = {}
        self.u_floor_ = {}
        self.n_u_pairs_ = {}
        for j, name in enumerate(self.comparisons):
            g = gamma[:, j]
            counts = np.bincount(g[g >= 0], minlength=self._k(name)).astype(np.float64)
            n = counts.sum()
            if n == 0:
                logger.warning("no non-null sampled pairs for '%s': u set uniform", name)
            # Floor: u_floor if set, else 1/(2 n): below that the sample says nothing.
            floor = self._u_floor_for(n)
            self.u_[name] = _smoothed_distribution(counts, floor)
            self.u_floor_[name] = floor
            self.n_u_pairs_[name] = int(n)
            unseen = np.flatnonzero(counts == 0)
            if len(unseen):
                logger.info(
                    "u for '%s': levels %s unobserved in %d sampled pairs, smoothed to %.3g",
                    name,
                    ", ".join(str(self.levels[name][i]) for i in unseen),
                    int(n),
                    self.u_[name][unseen].min(),
                )
        return self

    def estimate_prior(
        self, vectors_blocked: pd.DataFrame, rule: Mapping[str, int], *, recall: float = 1.0
    ) -> FellegiSunterModel:
        """Estimate lambda (the match share among blocked pairs) from a deterministic rule.

        A pair counts as a match when every comparison named in ``rule`` is at or above the
        given level; ``recall`` is the share of true matches the rule is believed to catch.
        Sets ``lambda_estimate_``, the starting lambda of :meth:`fit` (unless ``prior`` is set).
        Raises ``ValueError`` for an empty rule, a recall outside (0, 1] or an unknown name.
        """
        if not rule:
            raise ValueError("rule must name at least one comparison")
        if not 0.0 < recall <= 1.0:
            raise ValueError(f"recall must lie in (0, 1], got {recall}")
        gamma = self._gamma_matrix(vectors_blocked)
        hit = np.ones(len(gamma), dtype=bool)
        for name, level in rule.items():
            if name not in self.levels:
                raise ValueError(f"rule names unknown comparison '{name}'")
            hit &= gamma[:, self.comparisons.index(name)] >= int(level)
        n = max(len(gamma), 1)
        share = hit.sum() / recall / n
        self.lambda_estimate_ = float(np.clip(share, _LAMBDA_CLIP, 1 - _LAMBDA_CLIP))
        logger.info("estimated lambda %.4g from %d rule hits in %d pairs", share, hit.sum(), n)
        return self

    def _initial_m(self, name: str) -> np.ndarray:
        # Monotone increasing in level: closer agreement is likelier among matches.
        m = 3.0 ** np.arange(self._k(name))
        return m / m.sum()

    def fit(
        self,
        vectors: pd.DataFrame,
        *,
        random: pd.DataFrame | None = None,
        fix_u: bool = True,
    ) -> FellegiSunterModel:
        """Estimate m-probabilities and lambda by EM over blocked pairs (u fixed by default).

        ``random``: comparison vectors of randomly sampled pairs; u is estimated from them
        first (:meth:`estimate_u`). With ``fix_u`` and no ``random``, u must already be
        estimated. ``lambda_`` is then the match share among ``vectors``.
        Raises ``NotFittedError`` (no u) and ``InputError`` (no pairs).
        """
        if random is not None:
            self.estimate_u(random)
        if fix_u and not hasattr(self, "u_"):
            raise NotFittedError(
                "fit(fix_u=True) needs u: pass random= or call estimate_u() on sampled pairs first"
            )
        gamma = self._gamma_matrix(vectors)
        if len(gamma) == 0:
            raise InputError("cannot fit on an empty comparison-vector table")
        names = self.comparisons
        if hasattr(self, "u_"):
            u = {n: np.asarray(self.u_[n], dtype=np.float64).copy() for n in names}
        else:
            u = {n: self._initial_m(n)[::-1].copy() for n in names}
        u_floor = {
            n: getattr(self, "u_floor_", {}).get(n, self._u_floor_for(len(gamma))) for n in names
        }
        lam = self.prior if self.prior is not None else getattr(self, "lambda_estimate_", 0.1)
        result = self._em(gamma, u, u_floor, lam, fix_u=fix_u)
        self._set_em(result)
        self.m_ = {n: self._with_m_prior(n, self.m_[n], result["m_counts"][n]) for n in names}
        self._cap_disagreement()
        return self

    def _cap_disagreement(self) -> None:
        """Cap each comparison's ``else`` level at weight 0 (m <= u): a disagreement is never
        evidence of a match. Where the random pairs for u never disagree (a field nearly
        constant, such as ethnicity in a registry of Han people) ``else`` gets u from the
        smoothing floor and m from EM's prior, and their ratio alone made a disagreement
        count +8 bits for a match on 500 persons. The m mass taken from ``else`` goes to the
        other levels in proportion. An order constraint on EM's estimates, as in Winkler's
        constrained EM (Winkler 1993, "Improved decision rules in the Fellegi-Sunter model
        of record linkage")."""
        for name in self.comparisons:
            m, u = np.asarray(self.m_[name], dtype=np.float64), self.u_[name]
            if len(m) < 2 or m[0] <= u[0]:
                continue
            rest = m[1:].sum()
            capped = m.copy()
            capped[0] = u[0]
            capped[1:] = m[1:] * (1.0 - u[0]) / rest if rest > 0 else (1.0 - u[0]) / (len(m) - 1)
            logger.info(
                "m of '%s' at its else level (%.3g) exceeded u (%.3g): capped at u, so that "
                "a disagreement weighs 0 rather than %+.1f bits",
                name,
                m[0],
                u[0],
                math.log2(m[0] / u[0]),
            )
            self.m_[name] = capped

    def _em(
        self,
        gamma: np.ndarray,
        u: dict[str, np.ndarray],
        u_floor: dict[str, float],
        lam: float,
        *,
        fix_u: bool,
    ) -> dict[str, Any]:
        """Run EM from the given u and lambda; return m, u, u_floor, lambda and the trace."""
        patterns, counts = self._patterns(gamma)
        logger.info("EM over %d pairs, %d distinct patterns", len(gamma), len(patterns))
        names = self.comparisons
        m = {n: self._initial_m(n) for n in names}
        # Per-comparison column indices into [null, level 0, ..., level K-1] lookup tables.
        idx = [patterns[:, j].astype(np.intp) + 1 for j in range(len(names))]
        history: list[float] = []
        counts_m = {n: np.zeros(self._k(n)) for n in names}
        converged = False
        n_iter = 0
        while n_iter < self.max_iter:
            n_iter += 1
            log_m = np.full(len(patterns), math.log(lam))
            log_u = np.full(len(patterns), math.log1p(-lam))
            for j, n in enumerate(names):
                log_m += np.concatenate(([0.0], np.log(m[n])))[idx[j]]
                log_u += np.concatenate(([0.0], np.log(u[n])))[idx[j]]
            log_total = np.logaddexp(log_m, log_u)
            history.append(float((counts * log_total).sum()))
            post = np.exp(log_m - log_total)  # P(match | pattern)
            w_match = counts * post
            w_non = counts - w_match
            new_lam = float(np.clip(w_match.sum() / counts.sum(), _LAMBDA_CLIP, 1 - _LAMBDA_CLIP))
            delta = abs(new_lam - lam)
            for j, n in enumerate(names):
                k = self._k(n)
                cm = np.bincount(idx[j], weights=w_match, minlength=k + 1)[1:]
                counts_m[n] = cm
                if cm.sum() > 0:
                    new_m = _apply_floor(cm / cm.sum(), self.m_floor)
                    delta = max(delta, float(np.abs(new_m - m[n]).max()))
                    m[n] = new_m
                if not fix_u:
                    cu = np.bincount(idx[j], weights=w_non, minlength=k + 1)[1:]
                    if cu.sum() > 0:
                        new_u = _apply_floor(cu / cu.sum(), u_floor[n])
                        delta = max(delta, float(np.abs(new_u - u[n]).max()))
                        u[n] = new_u
            lam = new_lam
            if delta < self.tol:
                converged = True
                break
        if not converged:
            logger.warning("EM did not converge in %d iterations", self.max_iter)
        return {
            "m_": m,
            "u_": u,
            "u_floor_": u_floor,
            "lambda_": lam,
            "n_iter_": n_iter,
            "converged_": converged,
            "history_": history,
            "m_counts": counts_m,
        }

    def _set_em(self, result: dict[str, Any]) -> None:
        for key, value in result.items():
            if key != "m_counts":
                setattr(self, key, value)

    def _with_m_prior(self, name: str, m: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """m of one comparison with a Dirichlet prior on the levels EM never saw.

        ``counts``: expected matching pairs per level from EM's last E-step. A level with
        fewer than ``_UNSEEN_PAIRS`` of them gets ``_M_PRIOR_PAIRS`` pseudo-pairs spread as
        the monotone starting m (additive smoothing of a multinomial, Gelman et al.,
        *Bayesian Data Analysis*, ch. 2); levels EM saw keep their estimate but for the
        renormalizing. With thousands of matches it moves no weight measurably; on a pilot
        of a few dozen records a level EM never saw (a 15-to-18-digit ID) weighs about
        -1 bit instead of the -14 bits of the 1e-6 floor, which would veto a true match.
        The prior is small so that the few levels a pilot did see keep their weight.
        """
        n = float(np.sum(counts))
        if n <= 0:
            return m
        counts = np.asarray(counts, dtype=np.float64)
        # only levels EM gave (almost) no matching pair get prior mass: the levels it saw
        # keep their estimate on a pilot too
        unseen = counts < _UNSEEN_PAIRS
        if not unseen.any():
            return m
        extra = np.where(unseen, _M_PRIOR_PAIRS * self._initial_m(name), 0.0)
        return _apply_floor((counts + extra) / (n + extra.sum()), self.m_floor)

    def fit_sessions(
        self,
        vectors: pd.DataFrame,
        sessions: Sequence[Mapping[str, int]],
        *,
        random: pd.DataFrame | None = None,
        prior_rules: Sequence[Mapping[str, int]] = (),
        n_records: int | None = None,
        prior_recall: float = 1.0,
        min_pairs: int = 50,
    ) -> FellegiSunterModel:
        """Estimate m by EM in training sessions, each over the pairs agreeing on its rule.

        A session conditions on some comparisons (e.g. identical ID numbers): EM runs on the
        pairs at or above those levels, with those comparisons left out, so the m of every
        other comparison is learned from near-certain matches. Plain EM over all candidate
        pairs would instead take households sharing a phone for one person, because u from
        random pairs cannot describe non-matches that blocking made similar. Each m is the
        mean over the sessions that estimated it; a comparison no session covers falls back to
        EM over all pairs.

        ``lambda_`` is ``prior`` when set; otherwise Splink's prior,
        ``probability_two_random_records_match_``, estimated from ``prior_rules`` hits
        among ``vectors`` over all ``n_records`` (n-1) / 2 record pairs (see
        :func:`probability_two_random_records_match`); 1e-4 without rules.
        ``random``: vectors of sampled pairs to estimate u from first.
        Raises ``NotFittedError`` (no u) and ``ValueError`` (a rule naming no comparison).
        """
        if random is not None:
            self.estimate_u(random)
        if not hasattr(self, "u_"):
            raise NotFittedError("fit_sessions() needs u: pass random= or call estimate_u()")
        gamma_cols = {n: GAMMA_PREFIX + n for n in self.comparisons}
        sums = {n: np.zeros(self._k(n)) for n in self.comparisons}
        seen = dict.fromkeys(self.comparisons, 0)
        u_floor = dict(getattr(self, "u_floor_", {}))
        self.sessions_ = []
        for rule in sessions:
            unknown = [n for n in rule if n not in self.levels]
            if unknown:
                raise ValueError(f"training session names unknown comparison(s) {unknown}")
            mask = np.ones(len(vectors), dtype=bool)
            for name, level in rule.items():
                mask &= vectors[gamma_cols[name]].to_numpy() >= int(level)
            n_pairs = int(mask.sum())
            info = {"rule": dict(rule), "pairs": n_pairs, "estimated": []}
            self.sessions_.append(info)
            if n_pairs < min_pairs:
                logger.info(
                    "training session %s: only %d pairs, skipped",
                    " & ".join(f"{k}>={v}" for k, v in rule.items()),
                    n_pairs,
                )
                continue
            sub = vectors.loc[mask, list(gamma_cols.values())].copy()
            for name in rule:
                sub[gamma_cols[name]] = -1
            # a session's EM starts at lambda 0.5: its pairs are mostly matches
            session = self._em(self._gamma_matrix(sub), self._u_copy(), u_floor, 0.5, fix_u=True)
            # A level never seen among n session pairs has m below about 1/(2n), not ~0:
            # the floor keeps one unusual value (a house number written differently) from
            # vetoing a match on data unlike the training data.
            floor = 1.0 / (2.0 * n_pairs)
            for name in self.comparisons:
                if name not in rule:
                    sums[name] += _apply_floor(session["m_"][name], max(floor, self.m_floor))
                    seen[name] += 1
                    info["estimated"].append(name)
        missing = [n for n in self.comparisons if seen[n] == 0]
        fallback = None
        if missing:
            logger.info(
                "no training session estimated %s: EM over all pairs for them", ", ".join(missing)
            )
            fallback = self._em(
                self._gamma_matrix(vectors), self._u_copy(), u_floor, 0.1, fix_u=True
            )
        self.m_ = {
            n: (sums[n] / seen[n])
            if seen[n]
            else self._with_m_prior(n, fallback["m_"][n], fallback["m_counts"][n])
            for n in self.comparisons
        }
        rules = [dict(r) for r in prior_rules]
        if rules and n_records is not None:
            self.probability_two_random_records_match_ = probability_two_random_records_match(
                vectors, rules, n_records, prior_recall
            )
        self._cap_disagreement()
        if self.prior is not None:
            self.lambda_ = float(self.prior)
        else:
            self.lambda_ = float(getattr(self, "probability_two_random_records_match_", 1e-4))
        self.n_iter_ = 0
        self.converged_ = True
        self.history_ = []
        return self

    def household_mask(self, gamma: np.ndarray) -> np.ndarray:
        """Rows of an ``(n, C)`` level matrix at the household pattern of :meth:`fit_household`
        (all False when none was fitted)."""
        hh = getattr(self, "household_", None)
        if not hh:
            return np.zeros(len(gamma), dtype=bool)
        names = self.comparisons
        mask = gamma[:, names.index(hh["differ"])] == 0
        for name, level in hh["agree"].items():
            mask &= gamma[:, names.index(name)] >= int(level)
        if hh.get("witness"):
            # an agreeing witness (one ID) keeps the run's weights: it outweighs the pattern
            mask &= gamma[:, names.index(hh["witness"])] < int(hh["witness_match"])
            if not hh.get("unwitnessed", False):
                # where the witness is null (a clinic file without ID) the pattern alone does
                # not tell twins from one renamed person: the run's weights stay
                mask &= gamma[:, names.index(hh["witness"])] >= 0
        return mask

    def fit_household(
        self,
        vectors: pd.DataFrame,
        differ: str,
        agree: Mapping[str, int],
        *,
        witness: str | None = None,
        witness_match: int | None = None,
        unwitnessed: bool = False,
        min_pairs: int = 50,
    ) -> FellegiSunterModel:
        """Learn how to score pairs at the household pattern: the ``differ`` comparison at
        its ``else`` level while every ``agree`` comparison is at or above its level (default
        config: names that differ entirely, one birth date, a shared address or phone).

        Twins and siblings show this pattern; one person whose name was changed or
        recorded unrecognisably shows it too. Fellegi–Sunter multiplies the agreements as
        if independent, with u from random pairs, where a shared birth date and a shared
        address almost never meet; inside a household they meet whenever two children are
        twins, so the product overstates the evidence (conditional dependence: Winkler,
        "Using the EM algorithm for weight computation in the Fellegi-Sunter model of record
        linkage", 1988; Larsen and Rubin, JASA 2001, fit separate latent classes where the
        independence fails). Here the pairs at the pattern get a latent-class model of
        their own: EM with m AND u free over the other comparisons (ID, gender, hukou
        address, the contact level, ...), starting from the ``witness`` comparison
        (responsibility 0.9 at or above ``witness_match``, 0.1 below, 0.5 where null:
        an ID tells twins apart), so the match share among them (``lambda``) and each
        level's weight within households are learnt from the data. :meth:`score` then
        replaces the weights of such pairs with this model's: those whose witness disagrees
        (two IDs of one region and birth date: twins), and with ``unwitnessed`` also those
        whose witness is null. A pair whose witness agrees (one ID) keeps the run's weights.
        Fewer than ``min_pairs`` pairs at the pattern: nothing is fitted (``household_``
        None). Raises ``NotFittedError`` before :meth:`fit_sessions` / :meth:`fit`,
        ``ValueError`` for a comparison the model lacks.
        """
        self._check_fitted()
        for name in (differ, *agree, *([witness] if witness else [])):
            if name not in self.levels:
                raise ValueError(f"household pattern names unknown comparison '{name}'")
        self.household_ = None
        gamma = self._gamma_matrix(vectors)
        names = self.comparisons
        mask = gamma[:, names.index(differ)] == 0
        for name, level in agree.items():
            mask &= gamma[:, names.index(name)] >= int(level)
        n_pairs = int(mask.sum())
        if n_pairs < min_pairs:
            logger.info("household pattern: %d pairs, no household model", n_pairs)
            return self
        # every comparison but the differing one and those the pattern pins to one level
        free = [
            n for n in names if n != differ and not (n in agree and int(agree[n]) == self._k(n) - 1)
        ]
        patterns, counts = self._patterns(gamma[mask])
        cols = {n: patterns[:, names.index(n)].astype(np.intp) + 1 for n in free}
        if witness:
            w = patterns[:, names.index(witness)]
            post = np.where(w < 0, 0.5, np.where(w >= int(witness_match), 0.9, 0.1))
        else:
            post = np.full(len(patterns), 0.5)
        floor = 1.0 / (2.0 * n_pairs)
        # m stays the run's (how one person's records vary does not depend on the household),
        # restricted to the levels the pattern allows; u and lambda are learnt here
        m: dict[str, np.ndarray] = {}
        for n in free:
            mn = np.array(self.m_[n], dtype=np.float64)
            mn[: int(agree.get(n, 0))] = 0.0
            m[n] = _apply_floor(mn / mn.sum(), floor)
        u: dict[str, np.ndarray] = {}
        lam = 0.5
        for _ in range(self.max_iter):
            w_non = counts * (1.0 - post)
            new_lam = float(np.clip(1.0 - w_non.sum() / counts.sum(), floor, 1.0 - floor))
            delta = abs(new_lam - lam) if u else 1.0
            lam = new_lam
            for n in free:
                k = self._k(n)
                c = np.bincount(cols[n], weights=w_non, minlength=k + 1)[1:]
                new = _apply_floor(c / c.sum(), floor) if c.sum() > 0 else np.full(k, 1.0 / k)
                delta = max(delta, float(np.abs(new - u.get(n, new)).max()))
                u[n] = new
            log_m = np.full(len(patterns), math.log(lam))
            log_u = np.full(len(patterns), math.log1p(-lam))
            for n in free:
                log_m += np.concatenate(([0.0], np.log(m[n])))[cols[n]]
                log_u += np.concatenate(([0.0], np.log(u[n])))[cols[n]]
            post = np.exp(log_m - np.logaddexp(log_m, log_u))
            if delta < self.tol:
                break
        self.household_ = {
            "differ": differ,
            "agree": {n: int(v) for n, v in agree.items()},
            "witness": witness,
            "witness_match": None if witness is None else int(witness_match),
            "unwitnessed": bool(unwitnessed),
            "pairs": n_pairs,
            "lambda": lam,
            "m": m,
            "u": u,
        }
        logger.info("household pattern: %d pairs, match share %.3f", n_pairs, lam)
        return self

    def household_weights(self, gamma: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """For pairs at the household pattern (an ``(n, C)`` level matrix, rows already
        chosen by :meth:`household_mask`): their total match weight under the household model
        and each comparison's part of it (the pattern's own comparisons get 0; the household
        model's prior, log2(lambda / (1 - lambda)), replaces the run's)."""
        hh = self.household_
        total = np.full(len(gamma), math.log2(hh["lambda"]) - math.log2(1.0 - hh["lambda"]))
        parts = {}
        for j, name in enumerate(self.comparisons):
            if name in hh["m"]:
                table = np.concatenate(([0.0], np.log2(hh["m"][name] / hh["u"][name])))
                parts[name] = table[gamma[:, j].astype(np.intp) + 1]
            else:
                parts[name] = np.zeros(len(gamma))
            total += parts[name]
        return total, parts

    def _u_copy(self) -> dict[str, np.ndarray]:
        return {n: np.asarray(self.u_[n], dtype=np.float64).copy() for n in self.comparisons}

    def fit_supervised(self, vectors: pd.DataFrame, labels: np.ndarray) -> FellegiSunterModel:
        """Estimate m and u from labelled pairs (1 = match); lambda from the prior or label share."""
        gamma = self._gamma_matrix(vectors)
        y = np.asarray(labels)
        if y.shape != (len(gamma),):
            raise InputError(f"labels have shape {y.shape}, expected ({len(gamma)},)")
        if not np.isin(y, (0, 1)).all():
            raise InputError("labels must be 0 or 1")
        y = y.astype(bool)
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if n_pos == 0 or n_neg == 0:
            raise InputError("supervised fit needs both matching and non-matching labelled pairs")
        self.m_, self.u_, self.u_floor_ = {}, {}, {}
        for j, name in enumerate(self.comparisons):
            g = gamma[:, j]
            k = self._k(name)
            cm = np.bincount(g[y & (g >= 0)], minlength=k).astype(np.float64)
            cu = np.bincount(g[~y & (g >= 0)], minlength=k).astype(np.float64)
            floor = self._u_floor_for(cu.sum())
            self.m_[name] = _smoothed_distribution(cm, self.m_floor)
            self.u_[name] = _smoothed_distribution(cu, floor)
            self.u_floor_[name] = floor
        self.lambda_ = float(self.prior) if self.prior is not None else n_pos / len(y)
        self.n_iter_ = 0
        self.converged_ = True
        self.history_ = []
        return self

    # ------------------------------------------------------------------ weights and scoring

    @property
    def weights_(self) -> dict[str, np.ndarray]:
        """log2(m/u) per comparison and level."""
        self._check_fitted()
        return {n: np.log2(self.m_[n] / self.u_[n]) for n in self.comparisons}

    @property
    def prior_weight_(self) -> float:
        """log2(lambda / (1 - lambda))."""
        self._check_fitted()
        return float(math.log2(self.lambda_) - math.log2(1.0 - self.lambda_))

    def _tf_floor(self, name: str) -> float:
        if self.u_floor is not None:
            return float(self.u_floor)
        return float(getattr(self, "u_floor_", {}).get(name, 1e-12))

    def _tf_weight(self, name: str, tf: np.ndarray) -> np.ndarray:
        """Term-frequency partial weight log2(m_level / max(tf, floor)) for the tf level."""
        m_level = self.m_[name][self.tf_columns[name]]
        return np.log2(m_level) - np.log2(np.maximum(tf, self._tf_floor(name)))

    def _check_tf(self, tf: Mapping[str, np.ndarray] | None, n: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, values in (tf or {}).items():
            if name not in self.tf_columns:
                raise InputError(
                    f"term frequencies given for '{name}', which is not in tf_columns",
                    column=name,
                )
            arr = np.asarray(values, dtype=np.float64)
            if arr.shape != (n,):
                raise InputError(
                    f"term frequencies for '{name}' have shape {arr.shape}, expected ({n},)",
                    column=name,
                )
            out[name] = arr
        return out

    def score(self, vectors: pd.DataFrame, tf: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
        """Return ``vectors`` plus ``mw_<name>``, ``match_weight`` and ``match_probability``.

        ``tf[name]`` holds, per pair, the relative frequency of the agreeing value (NaN where
        unknown); pairs at that comparison's tf level get log2(m / max(tf, u_floor)).
        """
        self._check_fitted()
        new = self._score_matrix(self._gamma_matrix(vectors), tf)
        # The new float columns go in uncopied (copy=False, one block each): pd.concat or
        # column assignment copies them, over 1 s per 10M pairs. Input columns are copied
        # (cheap: int8 levels, int row keys) so editing the result never edits the input.
        kept = {c: vectors[c].copy() for c in vectors.columns if c not in new}
        return pd.DataFrame({**kept, **new}, index=vectors.index, copy=False)

    def score_levels(
        self, levels: Mapping[str, np.ndarray], tf: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """:meth:`score` for level arrays (comparison name -> int8 levels, -1 null) instead
        of a frame: returns ``mw_<name>``, ``match_weight`` and ``match_probability`` arrays,
        the same numbers :meth:`score` gives (it calls the same code). For a lookup's few
        pairs, where building the frames costs more than the arithmetic. Raises InputError
        for a missing comparison or a level out of range, as :meth:`score` does."""
        self._check_fitted()
        cols = []
        for name in self.comparisons:
            if name not in levels:
                col = GAMMA_PREFIX + name
                raise InputError(f"comparison vectors lack column '{col}'", column=col)
            arr = np.asarray(levels[name], dtype=np.int8)
            if len(arr):
                lo, hi = int(arr.min()), int(arr.max())
                if lo < -1 or hi >= self._k(name):
                    raise InputError(
                        f"levels must lie in -1..{self._k(name) - 1}, found {lo}..{hi}",
                        column=GAMMA_PREFIX + name,
                    )
            cols.append(arr)
        n = len(cols[0]) if cols else 0
        gamma = np.column_stack(cols) if cols else np.empty((n, 0), np.int8)
        return self._score_matrix(gamma, tf)

    def _score_matrix(
        self, gamma: np.ndarray, tf: dict[str, np.ndarray] | None
    ) -> dict[str, np.ndarray]:
        """Partial weights, total weight and probability of an (n, C) level matrix."""
        tf_arrays = self._check_tf(tf, len(gamma))
        total = np.full(len(gamma), self.prior_weight_, dtype=np.float64)
        new: dict[str, np.ndarray] = {}
        weights = self.weights_
        for j, name in enumerate(self.comparisons):
            # Lookup table indexed by level + 1: slot 0 is the null level, weight 0.
            table = np.concatenate(([0.0], weights[name]))
            g = gamma[:, j]
            mw = table[g + 1]  # int8 index: no 10M-element intp temporary
            if name in tf_arrays:
                t = tf_arrays[name]
                at = (g == self.tf_columns[name]) & ~np.isnan(t)
                mw[at] = self._tf_weight(name, t[at])
            total += mw
            new[MW_PREFIX + name] = mw
        at = self.household_mask(gamma)
        if at.any():
            hh_total, parts = self.household_weights(gamma[at])
            total[at] = hh_total
            for name, part in parts.items():
                new[MW_PREFIX + name][at] = part
            # the household prior's difference from the run's goes to the differing comparison
            new[MW_PREFIX + self.household_["differ"]][at] += (
                hh_total - self.prior_weight_ - sum(parts.values())
            )
        new[MATCH_WEIGHT] = total
        new[MATCH_PROBABILITY] = match_probability(total)
        return new

    # ------------------------------------------------------------------ explanation

    def _as_row(self, row: Any) -> pd.Series:
        if isinstance(row, pd.DataFrame):
            if len(row) != 1:
                raise InputError(f"explain takes one pair, got {len(row)} rows")
            return row.iloc[0]
        if isinstance(row, pd.Series):
            return row
        if isinstance(row, Mapping):
            # Accept {name: level} as well as {gamma_name: level}.
            prefixed = (GAMMA_PREFIX, MW_PREFIX)
            return pd.Series(
                {(k if k.startswith(prefixed) else GAMMA_PREFIX + k): v for k, v in row.items()}
            )
        raise TypeError(f"explain takes a Series, one-row DataFrame or mapping, not {type(row)}")

    def explain(
        self, scored_row_or_vector: Any, tf: Mapping[str, float] | None = None
    ) -> pd.DataFrame:
        """Per comparison: level, level name, m, u, partial weight, tf flag; last row the prior.

        A scored row's ``mw_`` values are used as they are (they carry any tf adjustment);
        for a bare vector, ``tf`` gives the agreeing value's frequency per tf comparison.
        """
        self._check_fitted()
        records = self.explain_records(self._as_row(scored_row_or_vector), tf)
        return pd.DataFrame(
            records,
            columns=["comparison", "level", "level_name", "m", "u", "weight", "tf_adjusted"],
        )

    def explain_records(
        self, row: Mapping[str, Any], tf: Mapping[str, float] | None = None
    ) -> list[tuple]:
        """:meth:`explain`'s rows as tuples, for a scored row keyed by ``gamma_`` / ``mw_``
        columns (a dict or Series): no frame is built, for a lookup's few hits."""
        self._check_fitted()
        weights = self.weights_
        gamma = []
        for name in self.comparisons:
            col = GAMMA_PREFIX + name
            if col not in row:
                raise InputError(f"pair lacks column '{col}'", column=col)
            raw = row[col]
            level = -1 if pd.isna(raw) else int(raw)
            if not -1 <= level < self._k(name):
                raise InputError(f"level {level} outside -1..{self._k(name) - 1}", column=col)
            gamma.append(level)
        g = np.array([gamma], dtype=np.int8)
        hh_parts: dict[str, float] = {}
        if self.household_mask(g)[0]:
            # a household pair: the household model's weights (see fit_household)
            hh_total, parts = self.household_weights(g)
            hh_parts = {n: float(v[0]) for n, v in parts.items()}
            hh_parts[self.household_["differ"]] += (
                float(hh_total[0]) - self.prior_weight_ - sum(float(v[0]) for v in parts.values())
            )
        records = []
        for name, level in zip(self.comparisons, gamma, strict=True):
            if level < 0:
                records.append((name, -1, "null", np.nan, np.nan, 0.0, False))
                continue
            base = hh_parts[name] if hh_parts else float(weights[name][level])
            weight = base
            tf_adjusted = False
            is_tf_level = self.tf_columns.get(name) == level
            mw_col = MW_PREFIX + name
            m_level, u_level = float(self.m_[name][level]), float(self.u_[name][level])
            if hh_parts and name in self.household_["m"]:
                m_level = float(self.household_["m"][name][level])
                u_level = float(self.household_["u"][name][level])
            if mw_col in row and not pd.isna(row[mw_col]):
                weight = float(row[mw_col])
                tf_adjusted = is_tf_level and not math.isclose(weight, base, abs_tol=1e-9)
            elif is_tf_level and tf is not None and name in tf and not pd.isna(tf[name]):
                weight = float(self._tf_weight(name, np.array([float(tf[name])]))[0])
                tf_adjusted = True
            records.append(
                (
                    name,
                    level,
                    self.levels[name][level],
                    m_level,
                    u_level,
                    weight,
                    tf_adjusted,
                )
            )
        records.append((PRIOR_ROW, -1, "", np.nan, np.nan, self.prior_weight_, False))
        return records

    def waterfall_data(
        self, scored_row_or_vector: Any, tf: Mapping[str, float] | None = None
    ) -> pd.DataFrame:
        """Prior first, then each comparison, then the total: weight, start, end, probability."""
        ex = self.explain(scored_row_or_vector, tf)
        ex = pd.concat([ex.iloc[[-1]], ex.iloc[:-1]], ignore_index=True)
        end = ex["weight"].cumsum().to_numpy()
        start = np.concatenate(([0.0], end[:-1]))
        steps = pd.DataFrame(
            {
                "step": [
                    c if c == PRIOR_ROW else f"{c}: {n}"
                    for c, n in zip(ex["comparison"], ex["level_name"], strict=True)
                ],
                "weight": ex["weight"].to_numpy(),
                "start": start,
                "end": end,
            }
        )
        total = pd.DataFrame(
            {"step": ["total"], "weight": [end[-1]], "start": [0.0], "end": [end[-1]]}
        )
        out = pd.concat([steps, total], ignore_index=True)
        out["probability"] = match_probability(out["end"].to_numpy())
        return out

    def parameters_table(self) -> pd.DataFrame:
        """One row per comparison level: comparison, level, level_name, m, u, weight."""
        self._check_fitted()
        weights = self.weights_
        rows = [
            (
                n,
                k,
                self.levels[n][k],
                float(self.m_[n][k]),
                float(self.u_[n][k]),
                float(weights[n][k]),
            )
            for n in self.comparisons
            for k in range(self._k(n))
        ]
        return pd.DataFrame(rows, columns=["comparison", "level", "level_name", "m", "u", "weight"])

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict:
        """Versioned, JSON-ready description of the settings and learned parameters."""
        self._check_fitted()
        return {
            "schema_version": SCHEMA_VERSION,
            "model": MODEL_KIND,
            "levels": {n: list(v) for n, v in self.levels.items()},
            "params": {
                "prior": self.prior,
                "max_iter": self.max_iter,
                "tol": self.tol,
                "m_floor": self.m_floor,
                "u_floor": self.u_floor,
            },
            "tf_columns": dict(self.tf_columns),
            "lambda": float(self.lambda_),
            "m": {n: [float(x) for x in self.m_[n]] for n in self.comparisons},
            "u": {n: [float(x) for x in self.u_[n]] for n in self.comparisons},
            "u_floor_fitted": {n: float(v) for n, v in getattr(self, "u_floor_", {}).items()},
            "fit": {
                "n_iter": int(getattr(self, "n_iter_", 0)),
                "converged": bool(getattr(self, "converged_", True)),
                "history": [float(x) for x in getattr(self, "history_", [])],
                # every training session had too few pairs: weights unreliable (said on use)
                "weak": bool(getattr(self, "weak_fit_", False)),
                # comparisons whose m and u a weak fit took from the reference model
                "reference": list(getattr(self, "reference_", [])),
            },
            "household": _household_to_json(getattr(self, "household_", None)),
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FellegiSunterModel:
        """Rebuild a fitted model from :meth:`to_dict` output; other schema versions are refused."""
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise InputError(
                f"model file has schema_version {version!r}; this version of linkage reads "
                f"schema_versions {list(READABLE_VERSIONS)}: re-train the model or use a "
                "matching release"
            )
        if data.get("model", MODEL_KIND) != MODEL_KIND:
            raise InputError(f"not a Fellegi–Sunter model file (model = {data.get('model')!r})")
        try:
            params = data.get("params", {})
            model = cls(
                data["levels"],
                tf_columns={k: int(v) for k, v in data.get("tf_columns", {}).items()},
                settings=data.get("settings"),
                **params,
            )
            model.m_ = {n: np.asarray(data["m"][n], dtype=np.float64) for n in model.comparisons}
            model.u_ = {n: np.asarray(data["u"][n], dtype=np.float64) for n in model.comparisons}
            model.lambda_ = float(data["lambda"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"model file is incomplete or malformed: {exc!r}") from exc
        for n in model.comparisons:
            for part, arr in (("m", model.m_[n]), ("u", model.u_[n])):
                if arr.shape != (model._k(n),) or not (arr > 0).all():
                    raise InputError(
                        f"model file: {part}['{n}'] must hold {model._k(n)} positive values"
                    )
        model.household_ = _household_from_json(data.get("household"), model)
        model.u_floor_ = {k: float(v) for k, v in data.get("u_floor_fitted", {}).items()}
        fit = data.get("fit", {})
        model.n_iter_ = int(fit.get("n_iter", 0))
        model.converged_ = bool(fit.get("converged", True))
        model.history_ = [float(x) for x in fit.get("history", [])]
        model.weak_fit_ = bool(fit.get("weak", False))
        model.reference_ = [str(name) for name in fit.get("reference", [])]
        return model

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as JSON atomically (temp file in the same folder, then os.replace)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=2, allow_nan=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> FellegiSunterModel:
        """Read a model written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"not a JSON model file: {exc}", path=str(path)) from exc
        if not isinstance(data, dict):
            raise InputError("model file must hold a JSON object", path=str(path))
        try:
            return cls.from_dict(data)
        except InputError as exc:
            raise InputError(str(exc), path=str(path)) from exc

    def __repr__(self) -> str:
        fitted = "fitted" if hasattr(self, "lambda_") else "unfitted"
        return f"FellegiSunterModel({len(self.levels)} comparisons, {fitted})"


def _household_to_json(hh: Mapping[str, Any] | None) -> dict | None:
    if not hh:
        return None
    out = {k: v for k, v in hh.items() if k not in ("m", "u")}
    out["lambda"] = float(hh["lambda"])
    for part in ("m", "u"):
        out[part] = {n: [float(x) for x in arr] for n, arr in hh[part].items()}
    return out


def _household_from_json(data: Mapping[str, Any] | None, model: FellegiSunterModel) -> dict | None:
    """The household model of a model file (absent in files written before it: None)."""
    if not data:
        return None
    try:
        hh = {k: v for k, v in data.items() if k not in ("m", "u")}
        hh["lambda"] = float(data["lambda"])
        hh["agree"] = {str(n): int(v) for n, v in data["agree"].items()}
        for part in ("m", "u"):
            hh[part] = {n: np.asarray(v, dtype=np.float64) for n, v in data[part].items()}
        names = [data["differ"], *hh["agree"], *hh["m"], *hh["u"]]
        if data.get("witness"):
            names.append(data["witness"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"model file: household model is malformed: {exc!r}") from exc
    for name in names:
        if name not in model.levels:
            raise InputError(f"model file: household model names unknown comparison '{name}'")
    for part in ("m", "u"):
        for n, arr in hh[part].items():
            if arr.shape != (model._k(n),) or not (arr > 0).all():
                raise InputError(
                    f"model file: household {part}['{n}'] must hold {model._k(n)} positive values"
                )
    if not 0.0 < hh["lambda"] < 1.0:
        raise InputError("model file: household lambda must lie strictly between 0 and 1")
    return hh
