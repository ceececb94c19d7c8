"""Column names of every table passed between stages, defined once.

Imports nothing from the package: every stage may import it.
"""

from __future__ import annotations

# Canonical record (docs/architecture.md, README "Configuration").
SOURCE = "source"
RECORD_ID = "record_id"
NAME = "name"
FORMER_NAME = "former_name"
GENDER = "gender"
BIRTH_DATE = "birth_date"
ETHNICITY = "ethnicity"
ID_NUMBER = "id_number"
PHONE = "phone"
HUKOU_ADDRESS = "hukou_address"
CURRENT_ADDRESS = "current_address"
REGISTERED_AT = "registered_at"

CANONICAL_FIELDS: tuple[str, ...] = (
    SOURCE,
    RECORD_ID,
    NAME,
    FORMER_NAME,
    GENDER,
    BIRTH_DATE,
    ETHNICITY,
    ID_NUMBER,
    PHONE,
    HUKOU_ADDRESS,
    CURRENT_ADDRESS,
    REGISTERED_AT,
)
# Fields a source config may map to (source is added by the reader).
MAPPABLE_FIELDS: tuple[str, ...] = tuple(f for f in CANONICAL_FIELDS if f != SOURCE)
# Fields a source may fill from several columns, joined in the config's order
# (``io.join_field_parts``): registries export 姓 and 名, or 省 / 市 / 区 / 详细地址, apart.
JOINABLE_FIELDS: tuple[str, ...] = (NAME, FORMER_NAME, HUKOU_ADDRESS, CURRENT_ADDRESS)

# Unmapped source columns pass through as "raw.<header>": every internal column name is a
# Python identifier (a test checks it), so a name holding a dot can never collide with one.
RAW_PREFIX = "raw."


# The bad-rows file (``run.bad_rows``, ``linkage run --bad-rows``): one rejected input row a
# line, with the file, its line (CSV) or row (sheet, Parquet), why, and the row as read.
REJECT_SOURCE = "source"
REJECT_FILE = "file"
REJECT_LINE = "line"
REJECT_REASON = "reason"
REJECT_RAW = "raw_row"
REJECT_COLUMNS: tuple[str, ...] = (
    REJECT_SOURCE,
    REJECT_FILE,
    REJECT_LINE,
    REJECT_REASON,
    REJECT_RAW,
)


def raw_col(header: str) -> str:
    """Return the pass-through column name of an unmapped source header, e.g. ``raw.备注``."""
    return RAW_PREFIX + header


# Derived name columns; a former name gets the same set with prefix "former_".
NAME_DERIVED_SUFFIXES: tuple[str, ...] = (
    "clean",  # simplified, half-width, no spaces, minority separator unified to U+00B7
    "script",  # han | latin | mixed | empty
    "surname",  # Han surname (compound surnames kept whole); null for latin / minority
    "given",  # Han given name
    "is_minority",  # transliterated name with middle-dot parts
    "pinyin",  # toneless pinyin, syllables joined by spaces, surname readings applied
    "pinyin_alt",  # the same name read in the other order (romanized names only)
    "initials",  # first letter of each syllable
    "fuzzy",  # fuzzy-pinyin key folding dialect confusions
    "surname_pinyin",
    "surname_fuzzy",
)


def name_col(field: str, suffix: str) -> str:
    """Return the derived column name for a name field, e.g. ``name_pinyin``."""
    return f"{field}_{suffix}"


# Derived resident-ID columns.
ID_STD = "id_std"  # 18 characters, upper-case X; null when not recoverable
ID_VALID = "id_valid"  # checksum and birth date both good
ID_BIRTH_DATE = "id_birth_date"  # ISO date string
ID_GENDER = "id_gender"  # M / F
ID_REGION_CODE = "id_region_code"  # 6 digits
ID_REGION_NAME = "id_region_name"
ID_REGION_STATUS = "id_region_status"  # current | historical | unknown
ID_FROM_15 = "id_from_15"  # converted from a legacy 15-digit number
# another identity document in the ID column: a Home Return Permit (H / M + 8 digits), a
# passport or a Hong Kong / Macao identity card
ID_DOC = "id_doc"

# Derived date columns: "<field>_std" as ISO date string.
BIRTH_DATE_STD = "birth_date_std"
REGISTERED_AT_STD = "registered_at_std"

GENDER_STD = "gender_std"  # M / F / null
ETHNICITY_STD = "ethnicity_std"  # GB 3304 name, e.g. 汉族
ETHNICITY_CODE = "ethnicity_code"  # two-digit GB 3304 code
PHONE_STD = "phone_std"  # digits: 11-digit mobile, or area code + number for landlines
PHONE_TYPE = "phone_type"  # mobile | landline

# Derived address columns: "<field>_<suffix>" for hukou_address and current_address.
ADDRESS_DERIVED_SUFFIXES: tuple[str, ...] = (
    "province",
    "city",
    "district",
    "adcode",  # six-digit code of the most precise level found
    "detail",  # normalized remainder after the district
)


def address_col(field: str, suffix: str) -> str:
    """Return the derived column name for an address field, e.g. ``current_address_district``."""
    return f"{field}_{suffix}"


# One string per record: quality flags joined by QUALITY_SEP, "" when clean.
QUALITY_FLAGS = "quality_flags"
QUALITY_SEP = "|"

# Ground truth written by the generator.
PERSON_ID = "person_id"
CORRUPTIONS = "corruptions"

# Integer row key of a standardized records table (0..n-1), used by pair tables.
ROW = "rid"
ROW_L = "rid_l"
ROW_R = "rid_r"
# Pair tables: ROW_L < ROW_R; RULE names the first blocking rule that produced the pair.
RULE = "rule"
# Comparison-vector tables: one int8 column per comparison, "gamma_<comparison>";
# -1 = null (either side missing), 0 = else (disagree), higher = closer agreement.
GAMMA_PREFIX = "gamma_"
# Scored pairs: "mw_<comparison>" partial match weights (log2), then totals.
MW_PREFIX = "mw_"
MATCH_WEIGHT = "match_weight"
MATCH_PROBABILITY = "match_probability"
# Clustering input gathered chunk by chunk: the pair is a twin/sibling pair held out of
# clustering when either record has a partner (cluster.sibling_parts).
SIBLING_IF_PARTNERED = "sibling_if_partnered"
# Clusters and outputs: one cluster label per record (any int/str), one identity id per cluster.
CLUSTER_ID = "cluster_id"
IDENTITY_ID = "identity_id"

# Keyed pair tables (labels, stored pairs, pairs.parquet): both records' (source, record_id).
SOURCE_L = "source_l"
RECORD_ID_L = "record_id_l"
SOURCE_R = "source_r"
RECORD_ID_R = "record_id_r"
PAIR_KEYS: tuple[str, ...] = (SOURCE_L, RECORD_ID_L, SOURCE_R, RECORD_ID_R)
# Reviewed pairs: PAIR_KEYS + LABEL (match / non-match / unsure, see linkage.review.labels).
LABEL = "label"

# Identity store: identities table and events table (linkage.identity, linkage.store).
STATUS = "status"
MERGED_INTO = "merged_into"
CREATED_RUN = "created_run"
UPDATED_RUN = "updated_run"
EVENT = "event"
OTHER_IDENTITY = "other_identity"
IDENTITY_COLUMNS: tuple[str, ...] = (IDENTITY_ID, STATUS, MERGED_INTO, CREATED_RUN, UPDATED_RUN)
EVENT_COLUMNS: tuple[str, ...] = (EVENT, IDENTITY_ID, OTHER_IDENTITY, SOURCE, RECORD_ID)
# Store-assigned row key of a stored record, the blocking-key hash column, the run number.
RECORD_KEY = "rk"
KEY_HASH = "h"
RUN_ID = "run_id"
