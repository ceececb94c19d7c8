"""Stable identity IDs: keep, merge, split, fresh, never reuse; independent of row order."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import schema
from linkage.identity import CLUSTER, assign_stable_ids, cluster_ids, fresh_ids, process_key

KNOWN_COLUMNS = [schema.IDENTITY_ID, "status", "created_run"]


def _current(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[schema.SOURCE, schema.RECORD_ID, CLUSTER])


def _previous(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID])


def _known(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=KNOWN_COLUMNS)


def _ids(result, current) -> dict[str, str]:
    return dict(zip(current[schema.RECORD_ID], result.identity_ids, strict=True))


def test_first_run_ids_equal_the_batch_ids():
    current = _current([("police", "p1", "a"), ("health", "h1", "a"), ("police", "p2", "b")])
    result = assign_stable_ids(current, _previous([]), _known([]), run_id=1)
    expected = cluster_ids(current, current[CLUSTER], process_key())
    assert list(result.identity_ids) == list(expected)
    assert set(result.identities["status"]) == {"active"}
    assert (result.events["event"] == "created").sum() == 2
    assert (result.events["event"] == "record_added").sum() == 3


def test_kept_id_and_new_record_added():
    previous = _previous([("police", "p1", "IDA"), ("health", "h1", "IDA")])
    current = _current([("police", "p1", 0), ("health", "h1", 0), ("civil", "c9", 0)])
    result = assign_stable_ids(current, previous, _known([("IDA", "active", 1)]), run_id=2)
    assert set(result.identity_ids) == {"IDA"}
    added = result.events[result.events["event"] == "record_added"]
    assert added[schema.RECORD_ID].tolist() == ["c9"]


def test_merge_keeps_the_older_id_on_equal_overlap():
    previous = _previous(
        [("police", "p1", "IDNEW"), ("police", "p2", "IDNEW"), ("health", "h1", "IDOLD")]
    )
    previous.loc[len(previous)] = ["health", "h2", "IDOLD"]
    current = _current([(s, r, 0) for s, r in previous[[schema.SOURCE, schema.RECORD_ID]].values])
    known = _known([("IDOLD", "active", 1), ("IDNEW", "active", 3)])
    result = assign_stable_ids(current, previous, known, run_id=4)
    assert set(result.identity_ids) == {"IDOLD"}
    row = result.identities.set_index(schema.IDENTITY_ID).loc["IDNEW"]
    assert row["status"] == "merged" and row["merged_into"] == "IDOLD"
    merged = result.events[result.events["event"] == "merged"]
    assert merged[[schema.IDENTITY_ID, "other_identity"]].values.tolist() == [["IDOLD", "IDNEW"]]


def test_merge_keeps_the_older_id_even_when_it_is_smaller():
    previous = _previous(
        [("p", "1", "IDB"), ("p", "2", "IDB"), ("p", "3", "IDB"), ("p", "4", "IDA")]
    )
    current = _current([("p", str(i), 0) for i in range(1, 5)])
    known = _known([("IDA", "active", 1), ("IDB", "active", 2)])
    result = assign_stable_ids(current, previous, known, run_id=3)
    assert set(result.identity_ids) == {"IDA"}
    merged = result.events[result.events["event"] == "merged"]
    assert merged[[schema.IDENTITY_ID, "other_identity"]].values.tolist() == [["IDA", "IDB"]]


def test_split_then_merge_of_the_larger_part_with_an_older_identity():
    # IDB splits: its larger part joins older IDA (IDA kept, IDB absorbed)... unless IDB's
    # smaller part is left without an id, in which case it keeps IDB.
    previous = _previous(
        [("p", "1", "IDA"), ("p", "2", "IDB"), ("p", "3", "IDB"), ("p", "4", "IDB")]
    )
    current = _current([("p", "1", "x"), ("p", "2", "x"), ("p", "3", "x"), ("p", "4", "y")])
    known = _known([("IDA", "active", 1), ("IDB", "active", 2)])
    ids = _ids(assign_stable_ids(current, previous, known, run_id=3), current)
    assert ids["1"] == ids["2"] == ids["3"] == "IDA"
    assert ids["4"] == "IDB"


def test_split_keeps_id_on_larger_part_and_fresh_id_elsewhere():
    previous = _previous([("p", "1", "IDA"), ("p", "2", "IDA"), ("p", "3", "IDA")])
    current = _current([("p", "1", "x"), ("p", "2", "x"), ("p", "3", "y")])
    result = assign_stable_ids(current, previous, _known([("IDA", "active", 1)]), run_id=2)
    ids = _ids(result, current)
    assert ids["1"] == ids["2"] == "IDA"
    assert ids["3"] != "IDA" and ids["3"].startswith("ID")
    split = result.events[result.events["event"] == "split"]
    assert split[[schema.IDENTITY_ID, "other_identity"]].values.tolist() == [["IDA", ids["3"]]]


def test_split_tie_is_deterministic():
    previous = _previous([("p", "1", "IDA"), ("p", "2", "IDA")])
    a = assign_stable_ids(
        _current([("p", "1", "x"), ("p", "2", "y")]), previous, _known([("IDA", "active", 1)]), 2
    )
    b = assign_stable_ids(
        _current([("p", "2", "q"), ("p", "1", "r")]), previous, _known([("IDA", "active", 1)]), 2
    )
    ids_a = _ids(a, _current([("p", "1", "x"), ("p", "2", "y")]))
    ids_b = _ids(b, _current([("p", "2", "q"), ("p", "1", "r")]))
    assert ids_a == ids_b
    assert ids_a["1"] == "IDA"  # the part with the smaller record key keeps the id


def test_fresh_ids_never_reuse_a_retired_or_merged_id():
    key = "police\x1fp1"
    taken = fresh_ids(pd.Series([key]).to_numpy(), set())[0]
    again = fresh_ids(pd.Series([key]).to_numpy(), {taken})[0]
    assert again != taken and again.startswith("ID")
    current = _current([("police", "p1", 0)])
    known = _known([(taken, "retired", 1)])
    result = assign_stable_ids(current, _previous([]), known, run_id=2)
    assert result.identity_ids[0] == again


def test_removed_records_retire_an_identity():
    previous = _previous([("p", "1", "IDA"), ("p", "2", "IDB")])
    current = _current([("p", "1", 0)])
    known = _known([("IDA", "active", 1), ("IDB", "active", 1)])
    result = assign_stable_ids(current, previous, known, run_id=2)
    status = result.identities.set_index(schema.IDENTITY_ID)["status"]
    assert status["IDB"] == "retired"
    assert "record_removed" in set(result.events["event"])


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=12),
    prev_labels=st.lists(st.integers(0, 3), min_size=12, max_size=12),
    seed=st.integers(0, 1000),
)
def test_assignment_is_independent_of_row_order(labels, prev_labels, seed):
    n = len(labels)
    keys = [("src", f"r{i:02d}") for i in range(n)]
    current = _current([(s, r, lab) for (s, r), lab in zip(keys, labels, strict=True)])
    previous = _previous([(s, r, f"IDP{p}") for (s, r), p in zip(keys, prev_labels, strict=False)])
    known = _known(
        [
            (f"IDP{p}", "active", p)
            for p in sorted(set(previous[schema.IDENTITY_ID].str[3:].astype(int)))
        ]
    )
    a = assign_stable_ids(current, previous, known, run_id=9)
    shuffled = current.sample(frac=1.0, random_state=seed)
    b = assign_stable_ids(shuffled, previous.sample(frac=1.0, random_state=seed), known, run_id=9)
    assert _ids(a, current) == _ids(b, shuffled)
    # one cluster, one id; different clusters, different ids
    pairs = set(zip(current[CLUSTER], a.identity_ids, strict=True))
    assert len(pairs) == current[CLUSTER].nunique() == len(set(a.identity_ids))
    pd.testing.assert_frame_equal(a.events, b.events)


# --- keyed identity names: unguessable from (source, record_id), stable for one key ---

KEY = b"identity-key-for-tests-0123456789"


def test_identity_names_are_keyed_and_stable():
    from linkage.identity import identity_names

    keys = pd.Series(["police\x1fJZ440301202000001", "health\x1f44030100100000001"]).to_numpy()
    first = identity_names(keys, KEY)
    assert list(first) == list(identity_names(keys, KEY))  # stable for one key
    other = identity_names(keys, b"another-identity-key-of-32-bytes")
    assert not set(first) & set(other)
    assert all(len(n) == 22 and n.startswith("ID") for n in first)


def test_guessing_record_ids_without_the_key_recovers_nothing():
    """The attack of an export reader who knows the record-id formats (unkeyed hash reversal).

    Without the key every guess, hashed the way the old unkeyed ids were or with any key the
    attacker can think of, misses; with the key the same enumeration finds every identity,
    which is why the key stays with the store or the run's outputs.
    """
    import hashlib

    from linkage.identity import identity_names, record_key

    guesses = [f"MZ2020{s:08d}" for s in range(1, 400)]
    records = pd.DataFrame({schema.SOURCE: "civil_affairs", schema.RECORD_ID: guesses[::7]})
    ids = set(cluster_ids(records, pd.Series(range(len(records))), KEY))
    keys = record_key(pd.Series(["civil_affairs"] * len(guesses)), pd.Series(guesses)).to_numpy()
    unkeyed = {"ID" + hashlib.sha1(k.encode()).hexdigest()[:14].upper() for k in keys}
    assert not ids & unkeyed
    for wrong in (b"\x00" * 16, b"LINKAGE_ID_KEY-guess", process_key()):
        assert not ids & set(identity_names(keys, wrong))
    assert ids <= set(identity_names(keys, KEY))  # the key holder, for contrast


def test_batch_key_file_is_created_private_and_reused(tmp_path, monkeypatch):
    import stat

    from linkage.errors import ConfigError
    from linkage.identity import ID_KEY_ENV, ID_KEY_FILE, batch_key, write_key_file

    monkeypatch.delenv(ID_KEY_ENV, raising=False)
    monkeypatch.delenv("LINKAGE_ID_KEY_FILE", raising=False)
    key, pending = batch_key(tmp_path)
    path = tmp_path / ID_KEY_FILE
    # nothing is written until the run has succeeded
    assert pending == path and not path.exists()
    assert write_key_file(pending, key) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert batch_key(tmp_path) == (key, None)
    monkeypatch.setenv(ID_KEY_ENV, "short")
    import pytest

    with pytest.raises(ConfigError, match="at least 16"):
        batch_key(tmp_path)
    monkeypatch.setenv(ID_KEY_ENV, "a-long-enough-identity-key")
    assert batch_key(tmp_path) == (b"a-long-enough-identity-key", None)


def test_records_a_merge_carries_are_moved_not_added():
    # two stored identities joined by one new record: the new record is added, the stored
    # records of the identity that loses its id are moved, so added events count new records
    previous = _previous([("police", "p1", "IDOLD"), ("health", "h1", "IDNEW")])
    current = _current([("police", "p1", 0), ("health", "h1", 0), ("civil", "c9", 0)])
    known = _known([("IDOLD", "active", 1), ("IDNEW", "active", 2)])
    result = assign_stable_ids(current, previous, known, run_id=3)
    events = result.events
    added = events[events["event"] == "record_added"]
    moved = events[events["event"] == "record_moved"]
    assert added[schema.RECORD_ID].tolist() == ["c9"]
    assert added[schema.OTHER_IDENTITY].isna().all()
    assert moved[schema.RECORD_ID].tolist() == ["h1"]
    assert moved[schema.OTHER_IDENTITY].tolist() == ["IDNEW"]
    assert moved[schema.IDENTITY_ID].tolist() == ["IDOLD"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_cluster_ids_same_for_sorted_and_shuffled_records(labels, rnd):
    # sorted keys take the integer path (smallest row), shuffled ones the string min
    n = len(labels)
    records = pd.DataFrame(
        {
            schema.SOURCE: ["police" if i % 3 else "health" for i in range(n)],
            schema.RECORD_ID: [f"r{i:03d}" for i in range(n)],
            "label": labels,
        }
    ).sort_values([schema.SOURCE, schema.RECORD_ID], ignore_index=True)
    order = list(range(n))
    rnd.shuffle(order)
    shuffled = records.iloc[order].reset_index(drop=True)
    named = {
        (s, r): i
        for s, r, i in zip(
            records[schema.SOURCE],
            records[schema.RECORD_ID],
            cluster_ids(records, records["label"], KEY),
            strict=True,
        )
    }
    again = cluster_ids(shuffled, shuffled["label"], KEY)
    assert [
        named[(s, r)]
        for s, r in zip(shuffled[schema.SOURCE], shuffled[schema.RECORD_ID], strict=True)
    ] == list(again)
    # one id per label, named after the label's smallest key
    for _, group in records.groupby("label"):
        smallest = min(zip(group[schema.SOURCE], group[schema.RECORD_ID]))
        assert {named[k] for k in zip(group[schema.SOURCE], group[schema.RECORD_ID])} == {
            named[smallest]
        }


@pytest.mark.parametrize("collide", [False, True, "same", "prefix", "uneven", "非ascii"])
def test_cluster_ids_named_in_arrow_equal_the_object_path(monkeypatch, collide):
    """Sorted record keys are named in Arrow a chunk of clusters at a time (no Python
    string per record): the same ids as the object path, also when two clusters' unsalted
    names meet (then the salting rule over every name decides, as always). ``True``: names
    not of ``_hash_id``'s width; ``"same"``: every name one valid name; ``"prefix"``: names
    alike in their first 16 hex digits only (the uint64 check cannot tell them apart,
    the exact count does: no salting)."""
    import linkage.identity as identity

    rnd = random.Random(5)
    n = 300
    records = pd.DataFrame(
        {
            schema.SOURCE: [rnd.choice(["health", "police", "户籍"]) for _ in range(n)],
            schema.RECORD_ID: [f"r{i:04d}" for i in range(n)],
        }
    ).sort_values([schema.SOURCE, schema.RECORD_ID], ignore_index=True)
    labels = pd.Series([rnd.randrange(120) for _ in range(n)])
    named: list[int] = []
    unsalted = identity._unsalted_names
    if collide in ("uneven", "非ascii"):
        # names of another form whose widths add up to 22 a name, or not ASCII: the
        # object path names them (never from ``_hash_id``, which writes 22 ASCII digits)
        def other_form(keys, key):
            names = unsalted(keys, key)
            if collide == "uneven":
                return [n[:21] if i % 2 else n + "Z" for i, n in enumerate(names)]
            return [n[:-1] + "名" for n in names]

        monkeypatch.setattr(identity, "_unsalted_names", other_form)
    elif collide == "prefix":
        monkeypatch.setattr(
            identity,
            "_unsalted_names",
            lambda keys, key: ["ID" + "F" * 16 + name[-4:] for name in unsalted(keys, key)],
        )
    elif collide:  # every unsalted name the same: the salting loop names them
        same = "IDSAME" if collide is True else "ID" + "0A" * 10
        monkeypatch.setattr(identity, "_unsalted_names", lambda keys, key: [same] * len(keys))
        real = identity.identity_names
        monkeypatch.setattr(
            identity, "identity_names", lambda keys, key: named.append(len(keys)) or real(keys, key)
        )
    monkeypatch.setattr(identity, "_NAMES_AT_ONCE", 7)  # chunks of clusters
    fast = cluster_ids(records, labels, KEY)
    monkeypatch.setattr(identity, "_arrow_keys", lambda keys: None)
    monkeypatch.setattr(identity, "_arrow_record_keys", lambda sources, ids: None)
    slow = cluster_ids(records, labels, KEY)
    assert list(fast) == list(slow)
    assert isinstance(slow, np.ndarray) and len(set(slow)) == labels.nunique()
    if pd.Series(np.array(["a"], dtype=object)).dtype != object:  # pandas 3: Arrow text
        assert isinstance(fast.dtype, pd.StringDtype)
    # with the names met, both paths went through the salting loop over every cluster
    assert named == ([labels.nunique()] * 2 if collide in (True, "same") else [])
    if collide == "prefix":
        assert {name[:18] for name in fast} == {"ID" + "F" * 16}


@pytest.mark.parametrize(
    "ids",
    [["r1", "户籍2", "𠀀3"], pd.array(["r1", "户籍2", "𠀀3"], dtype="str"), [1, 2, 3], ["r1", None, "r3"]],
)
def test_record_keys_joined_in_arrow_equal_record_key(ids):
    """Record keys joined in pyarrow are :func:`record_key`'s text; ids that are not all
    text (numbers, a null) are left to it."""
    from linkage.identity import _arrow_record_keys, record_key

    sources = pd.Series(["police", "health", "police"], dtype=object)
    record_ids = pd.Series(ids, dtype=ids.dtype if hasattr(ids, "dtype") else object)
    arrow = _arrow_record_keys(sources, record_ids)
    text = isinstance(record_ids.dtype, pd.StringDtype) or all(isinstance(v, str) for v in ids)
    if pd.Series(np.array(["a"], dtype=object)).dtype == object:  # pandas 2: never Arrow
        assert arrow is None
    elif text:
        assert arrow.to_pylist() == record_key(sources, record_ids).tolist()
    else:
        assert arrow is None


def test_distinct_names_reads_the_hex_prefix():
    """The uint64 check reads ``_hash_id``'s 16 first hex digits: names differing there are
    distinct; a prefix shared, even by distinct names, is not shown distinct."""
    from linkage.identity import _NAME_WIDTH, _distinct_names

    def rows(names):
        return np.frombuffer("".join(names).encode("ascii"), np.uint8).reshape(-1, _NAME_WIDTH)

    names = ["ID" + f"{i:016X}" + "0000" for i in (0, 9, 10, 15, 2**64 - 1)]
    assert _distinct_names(rows(names))
    assert not _distinct_names(rows(names + [names[2]]))
    assert not _distinct_names(rows(["ID" + "A" * 16 + "0001", "ID" + "A" * 16 + "0002"]))
    assert _distinct_names(rows(names[:1])) and _distinct_names(rows([]).reshape(0, _NAME_WIDTH))
