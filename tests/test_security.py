"""Attacks on exports, files and encodings, each run against project data and asserted to fail.

Data: ``linkage synth`` + ``linkage run --store`` on a small population; the exports are
written by ``linkage export`` with the shipped sharing policy. docs/privacy.md lists the
attacks and what they measured before and after each fix.
"""

from __future__ import annotations

import csv
import os
import stat

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from linkage import schema
from linkage.cli import app
from linkage.share import department_key, load_policy, pseudonymize
from linkage.store import Store

runner = CliRunner()
SHIPPED = ("police", "civil_affairs", "health", "statistics_microdata", "social_security")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """A store from `linkage synth` + `linkage run --store` and every shipped export."""
    folder = tmp_path_factory.mktemp("security")
    data = folder / "data"
    result = runner.invoke(
        app, ["synth", "--persons", "400", "--seed", "11", "-o", str(data), "-q"]
    )
    assert result.exit_code == 0, result.output
    store = folder / "ids.duckdb"
    result = runner.invoke(
        app, ["run", str(data / "run.yaml"), "--store", str(store), "-o", str(folder / "out"), "-q"]
    )
    assert result.exit_code == 0, result.output
    exports = {}
    for dept in (*SHIPPED, "statistics"):
        path = folder / f"{dept}.csv"
        result = runner.invoke(
            app, ["export", "--store", str(store), "--department", dept, "-o", str(path), "-q"]
        )
        assert result.exit_code == 0, result.output
        exports[dept] = path
    with Store.open(store, create=False) as opened:
        master = opened.secret("pseudonym_key")
        golden = opened.table("golden")
        links = opened.links()
    return {"folder": folder, "data": data, "store": store, "exports": exports,
            "master": master, "golden": golden, "links": links}  # fmt: skip


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _identities(built: dict, dept: str, frame: pd.DataFrame) -> pd.Series:
    """The identity id of each export row (evaluation only: uses the store's key)."""
    if schema.IDENTITY_ID in frame.columns:
        return frame[schema.IDENTITY_ID]
    ids = built["golden"][schema.IDENTITY_ID]
    names = pseudonymize(ids, department_key(built["master"], dept))
    return frame["pseudonym_id"].map(dict(zip(names, ids, strict=True)))


# --------------------------------------------------------------------- S1: row order


def test_two_departments_exports_cannot_be_joined_by_row_number(built):
    views = {d: _read(built["exports"][d]) for d in SHIPPED}
    rank = {}
    for dept, frame in views.items():
        ident = _identities(built, dept, frame)
        assert ident.notna().all() and ident.is_unique
        rank[dept] = pd.Series(np.arange(len(ident)), index=ident.to_numpy())
    n = len(built["golden"])
    for i, a in enumerate(SHIPPED):
        for b in SHIPPED[i + 1 :]:
            ra, rb = rank[a], rank[b].reindex(rank[a].index)
            same = int((ra.to_numpy() == rb.to_numpy()).sum())
            # row i of one export is the same person in the other only by chance (~1 row)
            assert same <= 5, (a, b, same)
            rho = ra.corr(rb, method="spearman")
            # |rho| of two independent orders of n rows is about 1/sqrt(n)
            assert abs(rho) < 4 / np.sqrt(n), (a, b, rho)


def test_row_order_reveals_no_record_id(built):
    # the golden table's order is that of each identity's smallest (source, record_id)
    links = built["links"]
    smallest = (
        (links[schema.SOURCE] + "\x1f" + links[schema.RECORD_ID])
        .groupby(links[schema.IDENTITY_ID])
        .min()
    )
    n = len(built["golden"])
    for dept in SHIPPED:
        frame = _read(built["exports"][dept])
        key = _identities(built, dept, frame).map(smallest).rank()
        rho = pd.Series(np.arange(len(key))).corr(key.reset_index(drop=True), method="spearman")
        assert abs(rho) < 4 / np.sqrt(n), (dept, rho)


def test_every_identity_appears_once_in_each_export(built):
    n = len(built["golden"])
    for dept in SHIPPED:
        ident = _identities(built, dept, _read(built["exports"][dept]))
        assert len(ident) == n and ident.is_unique
        assert set(ident) == set(built["golden"][schema.IDENTITY_ID])


# --------------------------------------------------------------------- S7: file modes


def test_store_and_audit_log_are_owner_only_and_store_check_warns(built, tmp_path):
    mode = stat.S_IMODE(os.stat(built["store"]).st_mode)
    assert mode == 0o600, oct(mode)
    for path in built["exports"].values():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    result = runner.invoke(app, ["store", "check", str(built["store"])])
    assert result.exit_code == 0 and "warning" not in result.output
    os.chmod(built["store"], 0o644)
    try:
        result = runner.invoke(app, ["store", "check", str(built["store"])])
        assert result.exit_code == 0, result.output
        assert "mode 0644" in result.output and "chmod 600" in result.output
    finally:
        os.chmod(built["store"], 0o600)


def test_audit_log_is_created_owner_only(built, tmp_path):
    pytest.importorskip("fastapi")
    from linkage.serve import LookupService, ServiceSettings, add_token

    tokens = tmp_path / "tokens.yaml"
    add_token(tokens, "health")
    audit = tmp_path / "audit.jsonl"
    service = LookupService(
        ServiceSettings(
            store=str(built["store"]),
            policy=str(load_policy().source_path),
            tokens=str(tokens),
            audit=str(audit),
        )  # fmt: skip
    )
    service.close()
    assert stat.S_IMODE(os.stat(audit).st_mode) == 0o600


# --------------------------------------------------------------------- S9: CSV cells


def test_every_text_cell_of_an_export_is_quoted(built, tmp_path):
    from linkage.share import write_export

    frame = pd.DataFrame({"name": ["a;=1+1", "张伟", None], "persons": [3, 4, 5]})
    path = write_export(frame, tmp_path / "x.csv")
    raw = path.read_text(encoding="utf-8").splitlines()
    # quoted, and a ';'-splitting spreadsheet's second piece starts with a quote, not '='
    assert raw[1] == '"a;\'=1+1",3'
    # a reader splitting on ';' (a European spreadsheet) still sees one quoted cell
    cells = next(csv.reader([raw[1]], delimiter=";"))
    assert not any(c.startswith("=") for c in cells), cells
    with open(built["exports"]["health"], encoding="utf-8") as f:
        header, first = f.readline(), f.readline()
    assert header.startswith('"') and first.startswith('"')


# --------------------------------------------------------------------- S3: quasi-identifier joins


def test_shipped_policy_exports_cannot_rebuild_ids_by_a_quasi_identifier_join(built):
    """social_security x health joined on (name, gender, birth year, ID prefix): the join is
    unique for most identities, but with the shipped grants it rebuilds no masked ID."""
    from linkage.share.export import quasi_identifier_joins

    policy = load_policy()
    joins = {o: (f, s) for o, f, s in quasi_identifier_joins(built["golden"], policy,
                                                            "social_security")}  # fmt: skip
    assert "health" in joins and joins["health"][1] > 0.5  # the join exists, measured
    ss, he = _read(built["exports"]["social_security"]), _read(built["exports"]["health"])
    key = ["name", "gender", "year", "first6"]
    for f in (ss, he):
        f["year"], f["first6"] = f["birth_date"].str[:4], f["id_number"].str[:6]
    joined = ss.merge(he.drop_duplicates(key, keep=False), on=key, suffixes=("", "_h"))
    assert len(joined) > 0.5 * len(ss)
    # nothing of the ID beyond the region code in either export: no full ID to rebuild
    assert not ss["id_number"].str.contains(r"\d{4}$", regex=True).any()
    rebuilt = joined["id_number"].str[:6] + joined["birth_date_h"].str.replace("-", "")
    truth = set(built["golden"]["id_number"].dropna().str[:14])
    assert rebuilt.isin(truth).mean() > 0.5  # the part both hold is as granted ...
    assert not any(len(x) == 18 for x in rebuilt)  # ... and no 18-digit ID comes out


def test_a_grant_that_a_quasi_identifier_join_turns_into_full_ids_is_refused(built, tmp_path):
    import yaml

    from linkage.share import DEFAULT_POLICY_PATH

    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    data["departments"]["social_security"]["fields"]["id_number"] = "first6_last4"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "ss.csv"
    result = runner.invoke(app, ["export", "--store", str(built["store"]), "--department",
                                 "social_security", "--policy", str(path), "-o", str(out)])  # fmt: skip
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "health" in text and "id_number" in text and "unique for" in text
    assert not out.exists()
    # the same grant passes where the shared fields single out few identities
    data["quasi_identifier_share"] = 1.0
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(app, ["export", "--store", str(built["store"]), "--department",
                                 "social_security", "--policy", str(path), "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------- S5, S6: PPRL keys


@pytest.mark.parametrize(
    "key",
    [
        "shenzhen-health-2026",
        "shenzhenhealthpolice2026aa",
        "0" * 32,
        "custodians-secret-0123456789",
    ],
)
def test_encode_refuses_a_passphrase_key_with_exit_2(built, tmp_path, key):
    key_file = tmp_path / "weak.key"
    key_file.write_text(key + "\n", encoding="utf-8")
    out = tmp_path / "clk.parquet"
    args = ["encode", str(built["data"] / "run.yaml"), "-o", str(out), "--source", "health",
            "--key-file", str(key_file), "--context", "2026-test"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "128 random bits" in " ".join(result.output.split()) and not out.exists()


def test_encode_key_writes_an_accepted_owner_only_key_and_context_unlinks(built, tmp_path):
    key = tmp_path / "custodians.key"
    result = runner.invoke(app, ["encode-key", "-o", str(key)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert len(bytes.fromhex(key.read_text().strip())) == 32
    assert runner.invoke(app, ["encode-key", "-o", str(key)]).exit_code == 2  # never overwrite
    base = ["encode", str(built["data"] / "run.yaml"), "--source", "police", "--key-file", str(key)]
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "x.parquet")])
    assert result.exit_code == 2 and "--context" in result.output
    frames = []
    for context in ("2026-health-survey", "2027-health-survey"):
        out = tmp_path / f"{context}.parquet"
        result = runner.invoke(app, [*base, "-o", str(out), "--context", context])
        assert result.exit_code == 0, result.output
        frames.append(pd.read_parquet(out))
    a, b = frames
    # the same key in two contexts: no record pseudonym, filter or key check value repeats
    assert not set(a["record_id"]) & set(b["record_id"])
    assert not set(a["clk"].dropna()) & set(b["clk"].dropna())
    assert a["key_check"].iloc[0] != b["key_check"].iloc[0]
    # and the filters of one record in two contexts are no closer than two random ones
    from linkage.pprl.bloom import decode_clks, dice_similarity

    dice = dice_similarity(decode_clks(a["clk"]), decode_clks(b["clk"]))
    assert np.nanmean(dice) < 0.6


# --------------------------------------------------------------------- S4: PPRL bit columns


def _bit_attack(records: pd.DataFrame, settings) -> dict[str, float]:
    """The linkage unit's view: undo balancing through complement columns where it can, then
    read gender and birth month off single bit columns and the top principal components."""
    from linkage.pprl import encode_records
    from linkage.pprl.bloom import decode_clks

    enc = encode_records(records, "5f0c9a1e7b3d42c88e6a9f10d2b7c4e1", settings)
    bits = np.unpackbits(decode_clks(enc["clk"]), axis=1).astype(np.float64)
    agree = bits.T @ bits + (1 - bits).T @ (1 - bits)
    pi, pj = np.nonzero(np.triu(agree == 0, 1))  # columns that disagree in every row
    if len(pi):
        density = bits.mean(0)
        bits = bits[:, np.where(density[pi] <= density[pj], pi, pj)]
    z = bits - bits.mean(0)
    z = z[:, z.std(0) > 0]

    def max_corr(y: np.ndarray) -> float:
        y = y - y.mean()
        c = (z * y[:, None]).sum(0) / (np.sqrt((z**2).sum(0)) * np.sqrt((y**2).sum()))
        return float(np.abs(c).max())

    male = (records[schema.GENDER_STD] == "M").to_numpy(float)
    born = pd.to_datetime(records[schema.BIRTH_DATE_STD], errors="coerce")
    u = np.linalg.svd(z, full_matrices=False)[0]
    pca = max(max(((u[:, k] > 0) == (male > 0)).mean(), ((u[:, k] > 0) != (male > 0)).mean())
              for k in range(5))  # fmt: skip
    months = max(max_corr((born.dt.month == m).to_numpy(float)) for m in range(1, 13))
    chance = max_corr(np.random.default_rng(0).permutation(male))
    return {"pairs": len(pi), "gender": max_corr(male), "pca": pca, "month": months,
            "chance": chance}  # fmt: skip


def test_default_encodings_hide_gender_and_birth_month_from_bit_columns(built):
    from linkage.config import load_config
    from linkage.io import read_records
    from linkage.pprl import EncodingSettings

    records = read_records(load_config(built["data"] / "run.yaml"))
    records = records[records[schema.SOURCE] != "civil_affairs"].reset_index(drop=True)
    records = records[records[schema.GENDER_STD].notna()].reset_index(drop=True)
    before = _bit_attack(records, EncodingSettings(salt="birth_year"))  # the old default
    after = _bit_attack(records, EncodingSettings())
    # the old default: balancing undone, gender and month read off single columns
    assert before["pairs"] == 1024 and before["gender"] > 0.7 and before["pca"] > 0.75
    # now: balancing is still undone (it only hides bit counts), but the filters it gives
    # back are salted: components and single columns near what shuffled labels give
    assert after["pairs"] == 1024
    assert after["pca"] < 0.65, after
    assert after["month"] < 2 * after["chance"], after
    assert after["gender"] < 3 * after["chance"] and after["gender"] < before["gender"] / 2, after


# --------------------------------------------------------------------- S8: microdata cells


def test_microdata_does_not_give_the_counts_an_aggregate_withholds(built):
    stats = _read(built["exports"]["statistics"])
    micro = _read(built["exports"]["statistics_microdata"])
    keys = ["gender", "birth_date", "current_address", "sources"]
    withheld = stats[stats["export_flags"] == "small_cell_suppressed"]
    assert len(withheld) > 0
    counts = micro.groupby(keys).size().rename("n").reset_index()
    matched = withheld.merge(counts, on=keys, how="inner")
    assert matched.empty, matched.head()  # no withheld cell appears with its count
    # and the microdata is k-anonymous on its fields (k = the policy's min_cell)
    k = load_policy().min_cell
    assert micro.groupby(keys).size().min() >= k
    assert (micro["export_flags"] == "k_anonymity_suppressed").any()
    assert len(micro) == len(built["golden"])  # nobody dropped, only their fields
