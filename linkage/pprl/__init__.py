"""Privacy-preserving record linkage in three parties: custodians encode, a linkage unit links.

Custodians share a secret the linkage unit never holds and run :func:`encode_records`; the
linkage unit runs :func:`link_encodings` on their encodings without any key. Threat model,
hardening and measured attacks: docs/privacy.md. Everything not listed here may change.
"""

from linkage.pprl.bloom import decode_clks, dice_similarity
from linkage.pprl.encode import (
    CLK,
    KEY_CHECK,
    EncodingSettings,
    encode_records,
    key_check_value,
    master_key,
    record_pseudonyms,
)
from linkage.pprl.link import SCORE, link_encodings

__all__ = [
    "CLK",
    "KEY_CHECK",
    "SCORE",
    "EncodingSettings",
    "decode_clks",
    "dice_similarity",
    "encode_records",
    "key_check_value",
    "link_encodings",
    "master_key",
    "record_pseudonyms",
]
