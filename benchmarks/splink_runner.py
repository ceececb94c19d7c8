"""Splink 5 (DuckDB) configured as a competent user would, over linkage's standardized columns.

Benchmark-only helper for bench_linking.py: imports splink (the ``bench`` extra) and
linkage.schema; the linkage package itself never imports this module.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from linkage import schema

logger = logging.getLogger(__name__)

# Column names Splink sees: linkage's standardized columns, plus two coalesced ones
# (birth date and gender fall back to what the ID number embeds, as our engine does).
NAME_CLEAN = schema.name_col(schema.NAME, "clean")
NAME_PINYIN = schema.name_col(schema.NAME, "pinyin")
NAME_FUZZY = schema.name_col(schema.NAME, "fuzzy")
NAME_GIVEN = schema.name_col(schema.NAME, "given")
NAME_INITIALS = schema.name_col(schema.NAME, "initials")
SURNAME_PINYIN = schema.name_col(schema.NAME, "surname_pinyin")
SURNAME_FUZZY = schema.name_col(schema.NAME, "surname_fuzzy")
FORMER_CLEAN = schema.name_col(schema.FORMER_NAME, "clean")
DOB = "dob"  # birth_date_std, else id_birth_date
SEX = "sex"  # gender_std, else id_gender
HUKOU_DISTRICT = schema.address_col(schema.HUKOU_ADDRESS, "district")
HUKOU_CITY = schema.address_col(schema.HUKOU_ADDRESS, "city")
HUKOU_DETAIL = schema.address_col(schema.HUKOU_ADDRESS, "detail")
CURRENT_DISTRICT = schema.address_col(schema.CURRENT_ADDRESS, "district")
CURRENT_CITY = schema.address_col(schema.CURRENT_ADDRESS, "city")
CURRENT_DETAIL = schema.address_col(schema.CURRENT_ADDRESS, "detail")

PASSED_COLUMNS: tuple[str, ...] = (
    NAME_CLEAN,
    NAME_PINYIN,
    NAME_FUZZY,
    NAME_GIVEN,
    NAME_INITIALS,
    SURNAME_PINYIN,
    SURNAME_FUZZY,
    FORMER_CLEAN,
    schema.ID_STD,
    schema.ID_BIRTH_DATE,
    schema.ID_REGION_CODE,
    schema.PHONE_STD,
    schema.ETHNICITY_STD,
    HUKOU_CITY,
    HUKOU_DISTRICT,
    HUKOU_DETAIL,
    CURRENT_CITY,
    CURRENT_DISTRICT,
    CURRENT_DETAIL,
)


def splink_tables(records: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Return one Splink input table per source: ``unique_id`` (= rid) and the passed columns."""
    table = pd.DataFrame({"unique_id": records[schema.ROW].to_numpy(np.int64)})
    for col in PASSED_COLUMNS:
        values = records[col] if col in records.columns else pd.Series(None, index=records.index)
        table[col] = values.astype(object).where(values.notna(), None).to_numpy()
    birth = records[schema.BIRTH_DATE_STD].where(records[schema.BIRTH_DATE_STD].notna())
    table[DOB] = birth.fillna(records[schema.ID_BIRTH_DATE]).astype(object).to_numpy()
    sex = records[schema.GENDER_STD].where(records[schema.GENDER_STD].notna())
    table[SEX] = sex.fillna(records[schema.ID_GENDER]).astype(object).to_numpy()
    table = table.astype({c: "string" for c in table.columns if c != "unique_id"})
    sources = records[schema.SOURCE].to_numpy()
    return {
        str(s): table[sources == s].reset_index(drop=True)
        for s in pd.unique(records[schema.SOURCE])
    }


def _address(prefix: str, city: str, district: str, detail: str) -> cl.CustomComparison:
    return cl.CustomComparison(
        output_column_name=prefix,
        comparison_levels=[
            cll.NullLevel(district),
            cll.And(cll.ExactMatchLevel(district), cll.ExactMatchLevel(detail)),
            cll.And(cll.ExactMatchLevel(district), cll.JaroWinklerLevel(detail, 0.9)),
            cll.ExactMatchLevel(district),
            cll.ExactMatchLevel(city),
            cll.ElseLevel(),
        ],
    )


def _contact() -> cl.CustomComparison:
    # Household contact as ONE piece of evidence: families share a phone and a flat, so
    # scoring them as two independent agreements merges parents, children and siblings.
    phone, district, detail = schema.PHONE_STD, CURRENT_DISTRICT, CURRENT_DETAIL
    same_flat = cll.And(cll.ExactMatchLevel(district), cll.ExactMatchLevel(detail))
    return cl.CustomComparison(
        output_column_name="contact",
        comparison_levels=[
            cll.And(cll.NullLevel(phone), cll.NullLevel(district)),
            cll.And(cll.ExactMatchLevel(phone), same_flat),
            cll.ExactMatchLevel(phone),
            same_flat,
            cll.LevenshteinLevel(phone, 1),
            cll.ExactMatchLevel(district),
            cll.ElseLevel(),
        ],
    )


def splink_settings(contact: str = "separate") -> SettingsCreator:
    """Settings for link_and_dedupe over the three registries, mirroring our blocking rules.

    ``contact="separate"`` compares phone and current address as two comparisons (the usual
    Splink set-up); ``"combined"`` scores them as one household-contact comparison.
    """
    if contact not in ("separate", "combined"):
        raise ValueError(f"contact must be 'separate' or 'combined', got {contact!r}")
    if contact == "separate":
        contact_comparisons = [
            cl.LevenshteinAtThresholds(schema.PHONE_STD, [1]),
            _address("current_address", CURRENT_CITY, CURRENT_DISTRICT, CURRENT_DETAIL),
        ]
    else:
        contact_comparisons = [_contact()]
    name = cl.CustomComparison(
        output_column_name="name",
        comparison_levels=[
            cll.NullLevel(NAME_CLEAN),
            # Common names (张伟) are weak evidence: term-frequency adjusted.
            cll.ExactMatchLevel(NAME_CLEAN).configure(tf_adjustment_column=NAME_CLEAN),
            # One registry holds the former name (曾用名) where another holds the current one.
            cll.CustomLevel(
                f"{NAME_CLEAN}_l = {FORMER_CLEAN}_r OR {FORMER_CLEAN}_l = {NAME_CLEAN}_r",
                label_for_charts="name equals the other's former name",
            ),
            cll.ExactMatchLevel(NAME_PINYIN),  # homophone typed through a pinyin IME
            cll.ExactMatchLevel(NAME_FUZZY),  # dialect confusions (n/l, zh/z ...)
            cll.LevenshteinLevel(NAME_CLEAN, 1),  # look-alike or one wrong character
            cll.JaroWinklerLevel(NAME_PINYIN, 0.9),
            cll.ElseLevel(),
        ],
    )
    id_number = cl.CustomComparison(
        output_column_name="id",
        comparison_levels=[
            cll.NullLevel(schema.ID_STD),
            cll.ExactMatchLevel(schema.ID_STD),
            cll.DamerauLevenshteinLevel(schema.ID_STD, 1),  # one typo or one adjacent swap
            cll.LevenshteinLevel(schema.ID_STD, 2),
            cll.ElseLevel(),
        ],
    )
    return SettingsCreator(
        link_type="link_and_dedupe",
        unique_id_column_name="unique_id",
        comparisons=[
            name,
            id_number,
            # exact, Levenshtein 1, within 2 months (lunar birthdays), 1 year, 10 years, else
            cl.DateOfBirthComparison(
                DOB,
                input_is_string=True,
                datetime_format="%Y-%m-%d",
                datetime_thresholds=[2, 1, 10],
                datetime_metrics=["month", "year", "year"],
            ),
            cl.ExactMatch(SEX),
            cl.ExactMatch(schema.ETHNICITY_STD),
            _address("hukou_address", HUKOU_CITY, HUKOU_DISTRICT, HUKOU_DETAIL),
            *contact_comparisons,
        ],
        # The same rules in spirit as linkage.blocking.DEFAULT_RULES.
        blocking_rules_to_generate_predictions=[
            block_on(schema.ID_STD),
            block_on(NAME_PINYIN, f"substr({DOB}, 1, 4)"),
            block_on(SURNAME_FUZZY, DOB),
            block_on(NAME_GIVEN, DOB),
            block_on(schema.ID_BIRTH_DATE, schema.ID_REGION_CODE),
            block_on(schema.PHONE_STD),
            block_on(NAME_PINYIN, f"substr({DOB}, 6, 5)"),  # same name and birth month-day
            block_on(NAME_FUZZY, HUKOU_DISTRICT),
        ],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )


def run_splink(
    records: pd.DataFrame,
    *,
    threshold: float = 0.9,
    u_max_pairs: float = 5e6,
    seed: int = 0,
    prior_recall: float = 0.8,
    log_level: int = logging.ERROR,
    contact: str = "separate",
) -> tuple[pd.DataFrame, dict[str, float], dict]:
    """Link standardized records with Splink; return (identities, seconds per stage, info).

    ``log_level`` ERROR hides Splink's warnings about levels EM never observed (near-miss ID and
    phone levels keep Splink's default u/m); pass WARNING to see them.
    """
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    db_api = DuckDBAPI()
    inputs = [
        db_api.register(frame, dataset_display_name=source)
        for source, frame in splink_tables(records).items()
    ]
    linker = Linker(inputs, splink_settings(contact), log_level=log_level)
    seconds["register"] = time.perf_counter() - t

    t = time.perf_counter()
    # Prior from the same deterministic rules and assumed recall as our prior_rules.
    linker.training.estimate_probability_two_random_records_match(
        [block_on(schema.ID_STD), block_on(NAME_CLEAN, DOB)], recall=prior_recall
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=u_max_pairs, seed=seed)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on(schema.ID_STD))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on(NAME_CLEAN, DOB))
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    blocked = linker.inference.compute_blocked_pairs_for_predict()
    n_pairs = int(blocked.as_duckdbpyrelation().count("*").fetchall()[0][0])
    seconds["block"] = time.perf_counter() - t

    t = time.perf_counter()
    predictions = linker.inference.predict()  # scores the blocked pairs cached above
    seconds["predict"] = time.perf_counter() - t

    t = time.perf_counter()
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=threshold
    )
    frame = clusters.as_pandas_dataframe()
    seconds["cluster"] = time.perf_counter() - t

    row = frame["unique_id"].to_numpy(np.int64)
    identities = pd.DataFrame(
        {
            schema.SOURCE: records[schema.SOURCE].to_numpy()[row],
            schema.RECORD_ID: records[schema.RECORD_ID].to_numpy()[row],
            schema.IDENTITY_ID: frame["cluster_id"].astype(str).to_numpy(),
        }
    )
    info = {
        "candidate_pairs": n_pairs,
        "probability_two_random_records_match": float(
            linker._settings_obj._probability_two_random_records_match
        ),
    }
    return identities, seconds, info
