"""A data custodian's step of privacy-preserving linkage: records to hardened record-level CLKs.

Pure functions over standardized records; imports schema, errors, the other pprl modules
(and the ID standardizer, to spot IDs in record ids), never the store, config, Linker or CLI. Threat model and measured attacks: docs/privacy.md.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from linkage import schema
from linkage.errors import InputError
from linkage.pprl.bloom import RandomHasher, balance, bloom_matrix, derive, encode_base64, xor_fold
from linkage.pprl.tokens import (
    FIELD_COLUMNS,
    PINYIN_COLUMN,
    date_tokens,
    gender_tokens,
    id_tokens,
    name_tokens,
)

logger = logging.getLogger(__name__)

# Columns of an encodings table (what a custodian hands the linkage unit).
CLK = "clk"
KEY_CHECK = "key_check"
ENCODING_COLUMNS: tuple[str, ...] = (schema.SOURCE, schema.RECORD_ID, CLK, KEY_CHECK)

DEFAULT_FIELDS: tuple[str, ...] = (schema.NAME, schema.BIRTH_DATE, schema.GENDER, schema.ID_NUMBER)
# Bits set per token of each field (clkhash's "bitsPerToken"): names carry most of the signal on
# health records that lack an ID, so their tokens weigh most.
DEFAULT_BITS_PER_TOKEN: dict[str, int] = {
    schema.NAME: 12,
    schema.BIRTH_DATE: 6,
    schema.GENDER: 8,
    schema.ID_NUMBER: 5,
}
MIN_KEY_BYTES = 16
Hardening = Literal["none", "balance", "xor_fold"]
Salt = Literal["none", "birth_year", "all"]

_TOKENIZERS = {
    schema.BIRTH_DATE: date_tokens,
    schema.GENDER: gender_tokens,
    schema.ID_NUMBER: id_tokens,
}
# A resident ID or a mobile number used as a record id is an identifier in its own right,
# also inside a longer id (`P110101199003070011`, `110101199003070011-01`), written with
# separators (`110101 19900307 0011`, `110101.19900307.0011`, `(139)1234-5678`, zero-width
# spaces) or after +86 / 0086 (`+8613912345678`): the id is searched as it is and without
# any character that is neither a letter nor a digit, for a digit run of an ID's or a mobile
# number's length (a 17-digit registration number is neither). A longer digit run
# (`11010119900307001101`, an ID and a visit number) is searched for an ID whose province,
# birth date and check character are valid (GB 11643).
_SENSITIVE_ID = r"(?<!\d)(?:\d{17}[\dXx]|\d{15}|(?:0086|86)?1[3-9]\d{9})(?!\d)"
_ID_SEPARATORS = r"[\W_]"
_LONG_RUN = re.compile(r"[\dXx]{19,}")
# the province codes of GB/T 2260 (an ID's first two digits)
_PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 "
    "64 65 71 81 82 83".split()
)


def _holds_checked_id(text: str) -> bool:
    """Whether a digit run longer than an ID in ``text`` holds an 18-character resident ID
    with a valid province code, birth date and check character (GB 11643, read by the
    standardizer's own ID rules)."""
    import unicodedata

    from linkage.standardize.idnumber import standardize_id_number

    for run in _LONG_RUN.findall(unicodedata.normalize("NFKC", text)):
        for start in range(len(run) - 17):
            window = run[start : start + 18].upper()
            if window[:2] not in _PROVINCES or window[6:8] not in ("19", "20"):
                continue
            if standardize_id_number(window)[schema.ID_VALID] is True:
                return True
    return False


@dataclass(frozen=True)
class EncodingSettings:
    """How records are encoded; every custodian of one linkage must use the same settings.

    ``bits``: filter length before hardening. ``hardening``: ``balance`` (default; length doubles,
    half the bits set), ``xor_fold`` (length halves) or ``none``. ``salt``: ``birth_year``
    salts name tokens with the birth year, so equal names of different years set different
    bits and a frequent name no longer has one signature to mine; ``all`` (default) also salts
    the birth-date, gender and ID tokens with the birth year (the year token with the
    gender), so no token is shared by a large group (a gender, a birth month, a
    province) whose bits a pattern miner could read; ``none`` salts nothing.
    The defaults were chosen by ``benchmarks/bench_pprl.py`` (docs/privacy.md has the figures).
    """

    fields: tuple[str, ...] = DEFAULT_FIELDS
    bits: int = 1024
    bits_per_token: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_BITS_PER_TOKEN))
    hardening: Hardening = "balance"
    salt: Salt = "all"
    # the linkage project or period (e.g. "2026-health-survey"): bound into every derived key
    # and the key check, so one secret used in two contexts gives unlinkable encodings
    context: str = ""

    def __post_init__(self) -> None:
        unknown = [f for f in self.fields if f not in FIELD_COLUMNS]
        if unknown:
            raise InputError(f"cannot encode {unknown}; encodable fields: {list(FIELD_COLUMNS)}")
        if self.bits % 16 or not 64 <= self.bits <= 8192:
            raise InputError(f"bits must be a multiple of 16 in 64..8192, got {self.bits}")
        if 65536 % self.bits:
            raise InputError(f"bits must be a power of two, got {self.bits}")
        if self.hardening not in ("none", "balance", "xor_fold"):
            raise InputError(f"unknown hardening {self.hardening!r}")
        if self.salt not in ("none", "birth_year", "all"):
            raise InputError(f"unknown salt {self.salt!r}")

    def describe(self) -> str:
        """One canonical line naming every setting (bound into the key check value)."""
        d = asdict(self)
        return "v2;" + ";".join(f"{k}={d[k]}" for k in sorted(d))


def check_key_strength(secret: bytes) -> None:
    """Refuse a secret that does not look like at least 128 random bits.

    Accepted: hex of at least 16 bytes, or base64 (standard or URL-safe) of at least 16 bytes
    that mixes lower case, upper case and digits, as ``linkage encode-key`` writes. A
    passphrase such as ``shenzhen-health-2026`` falls to a small dictionary through the key
    check value in every encodings row (seconds, scrypt notwithstanding). Raises InputError.
    """
    import base64
    import binascii
    import re

    text = secret.decode("ascii", "replace").strip()
    random_like = False
    if re.fullmatch(r"[0-9a-fA-F]{32,}", text):
        random_like = len(set(text.lower())) >= 8
    elif re.fullmatch(r"[A-Za-z0-9+/_-]{22,}={0,2}", text):
        try:
            raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "==", validate=False)
        except (binascii.Error, ValueError):
            raw = b""
        classes = sum(bool(re.search(c, text)) for c in ("[a-z]", "[A-Z]", "[0-9]"))
        random_like = len(raw) >= 16 and classes == 3 and len(set(text)) >= 12
    if not random_like:
        raise InputError(
            "the encoding key does not look like at least 128 random bits (hex or base64 of "
            "16+ random bytes): a passphrase can be guessed offline from the key check value. "
            "Make one with `linkage encode-key --output FILE`"
        )


def master_key(secret: bytes | str, context: str = "") -> bytes:
    """Stretch the custodians' shared secret with scrypt (RFC 7914; about 50 ms, 16 MiB).

    The stretch slows anyone who tests guessed passphrases against encodings or the key check
    value; it is no substitute for a random secret of at least 16 bytes. Raises InputError for
    an empty secret.
    """
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise InputError("an encoding key is required (the custodians' shared secret)")
    if len(raw) < MIN_KEY_BYTES:
        logger.warning(
            "the encoding key has %d bytes: use a random secret of at least %d bytes, as a short "
            "or guessable one lets the linkage unit test guesses offline",
            len(raw),
            MIN_KEY_BYTES,
        )
    # the context salts the stretch: every key derived below differs per project/period
    salt = b"linkage-pprl-v2" + (b"/" + context.encode("utf-8") if context else b"")
    return hashlib.scrypt(raw, salt=salt, n=2**14, r=8, p=1, dklen=32)


def key_check_value(master: bytes, settings: EncodingSettings) -> str:
    """Key check value: 6 bytes of HMAC(master, settings), hex.

    Equal for encodings made with the same key and settings, so the linkage unit detects a
    mistyped key or mismatched settings instead of silently linking nothing.
    """
    return hmac.digest(derive(master, "key-check"), settings.describe().encode(), "sha256")[
        :6
    ].hex()


def record_pseudonyms(sources: pd.Series, record_ids: pd.Series, master: bytes) -> pd.Series:
    """Keyed pseudonym of each (source, record_id): ``R`` + 24 hex digits of HMAC-SHA256.

    The linkage unit sees only these; a custodian maps results back with its key (or the key
    map written by ``linkage encode --key-map``).
    """
    key = derive(master, "record-id")
    text = sources.astype(str) + "\x1f" + record_ids.astype(str)
    codes, uniques = pd.factorize(text)
    names = np.array(
        ["R" + hmac.digest(key, u.encode("utf-8"), "sha256")[:12].hex() for u in uniques],
        dtype=object,
    )
    return pd.Series(names[codes], index=sources.index)


def _column(records: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    present = [c for c in columns if c in records.columns]
    if not present:
        return pd.Series([None] * len(records), index=records.index, dtype=object)
    out = records[present[0]].astype(object)
    for c in present[1:]:
        out = out.where(out.notna(), records[c].astype(object))
    return out.where(out.notna(), None)


def _record_salt(token: str, birth: object, gender: object) -> str:
    """Salt of one non-name token: another attribute of the same record.

    Birth-date, gender and ID tokens take the birth year, except the year token itself,
    which takes the gender. Each token then belongs to a small group (women born in 1990),
    never to a whole gender, birth month or province. The name is no salt here: it would
    make every frequent surname a signature.
    """
    if token.startswith("y:"):
        return gender if isinstance(gender, str) and gender else "?"
    return str(birth)[:4] if isinstance(birth, str) and birth else "?"


def record_tokens(records: pd.DataFrame, settings: EncodingSettings) -> list[list[tuple[str, int]]]:
    """(token, bits) pairs of each record, field-tagged so equal q-grams of fields stay apart."""
    columns = {}
    for f in settings.fields:
        columns[f] = _column(records, FIELD_COLUMNS[f]).to_numpy()
    pinyin = _column(records, (PINYIN_COLUMN,)).to_numpy()
    birth = _column(records, FIELD_COLUMNS[schema.BIRTH_DATE]).to_numpy()
    gender = _column(records, FIELD_COLUMNS[schema.GENDER]).to_numpy()
    k = settings.bits_per_token
    out: list[list[tuple[str, int]]] = []
    for i in range(len(records)):
        tokens: list[tuple[str, int]] = []
        for f in settings.fields:
            if f == schema.NAME:
                salt = ""
                if settings.salt in ("birth_year", "all"):
                    year = birth[i]
                    salt = (str(year)[:4] if isinstance(year, str) else "?") + "|"
                name = columns[f][i]
                toks = name_tokens(name if isinstance(name, str) else None,
                                   pinyin[i] if isinstance(pinyin[i], str) else None)  # fmt: skip
                tokens.extend((f"{f}/{salt}{t}", k.get(f, 10)) for t in toks)
            else:
                value = columns[f][i]
                if isinstance(value, str) and value:
                    for t in _TOKENIZERS[f](value):
                        if settings.salt == "all":
                            t = _record_salt(t, birth[i], gender[i]) + "|" + t
                        tokens.append((f"{f}/{t}", k.get(f, 10)))
        out.append(tokens)
    return out


def encode_records(
    records: pd.DataFrame,
    secret: bytes | str,
    settings: EncodingSettings | None = None,
    *,
    record_ids: Literal["pseudonym", "plain"] = "pseudonym",
    chunk: int = 8192,
) -> pd.DataFrame:
    """Encode standardized records as hardened record-level CLKs (Schnell et al. 2011).

    Takes ``source``, ``record_id`` and the standardized columns of ``settings.fields``.
    Returns ``source``, ``record_id`` (a keyed pseudonym unless ``record_ids="plain"``), ``clk``
    (base64; null for a record with no encodable value) and ``key_check``. Raises InputError for
    an empty secret, or for ``plain`` record ids that look like resident IDs or mobile numbers.
    """
    settings = settings or EncodingSettings()
    master = master_key(secret, settings.context)
    sources = records.get(schema.SOURCE, pd.Series([""] * len(records), index=records.index))
    ids = records[schema.RECORD_ID]
    if record_ids == "plain":
        text = ids.astype("string")
        joined = text.str.replace(_ID_SEPARATORS, "", regex=True)
        sensitive = (
            text.str.contains(_SENSITIVE_ID, regex=True)
            | joined.str.contains(_SENSITIVE_ID, regex=True)
        ).fillna(False)
        # digit runs longer than an ID are rare: those few ids are checked one by one
        long_run = joined.str.contains(_LONG_RUN.pattern, regex=True).fillna(False).to_numpy(bool)
        if long_run.any():
            checked = np.zeros(len(joined), dtype=bool)
            checked[long_run] = [_holds_checked_id(str(t)) for t in joined[long_run]]
            sensitive = sensitive.astype(bool) | checked
        if sensitive.any():
            rows = ", ".join(str(int(i)) for i in np.flatnonzero(sensitive.to_numpy())[:5])
            raise InputError(
                f"{int(sensitive.sum())} record id(s) look like resident IDs or mobile numbers "
                f"(rows {rows}): they would reach the linkage unit in clear; encode with "
                "record ids as pseudonyms"
            )
        out_ids = ids.astype(str)
    elif record_ids == "pseudonym":
        out_ids = record_pseudonyms(sources, ids, master)
    else:
        raise InputError(f"record_ids must be 'pseudonym' or 'plain', got {record_ids!r}")
    hasher = RandomHasher(derive(master, "clk"), settings.bits)
    balance_key = derive(master, "balance")
    tokens = record_tokens(records, settings)
    clks = np.empty(len(records), dtype=object)
    for s in range(0, len(records), chunk):
        part = tokens[s : s + chunk]
        bits = bloom_matrix(part, hasher)
        if settings.hardening == "balance":
            bits = balance(bits, balance_key)
        elif settings.hardening == "xor_fold":
            bits = xor_fold(bits)
        text = encode_base64(np.packbits(bits, axis=1))
        has = np.array([bool(t) for t in part])
        clks[s : s + len(part)] = np.where(has, text, None)
    out = pd.DataFrame(
        {
            schema.SOURCE: sources.to_numpy(dtype=object),
            schema.RECORD_ID: out_ids.to_numpy(dtype=object),
            CLK: clks,
            KEY_CHECK: key_check_value(master, settings),
        }
    )
    logger.info("encoded %d records (%s)", len(out), settings.describe())
    return out
