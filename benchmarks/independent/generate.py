"""Write the three registries, their source configs, run.yaml and truth.csv, chunk by chunk."""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

from . import registries as R
from .population import Counters, Profile, build_chunk

SOURCES = {
    # name: (file, encoding written, encoding declared in the config, headers, id prefix)
    "police": ("police.csv", "utf-8", "utf-8", R.POLICE, "JZ"),
    "civil_affairs": ("civil_affairs.csv", "gbk", "gbk", R.CIVIL, "MZ"),
    "health": ("health.csv", "gb18030", "gb18030", R.HEALTH, "0"),
}
TRUTH_COLUMNS = ["source", "record_id", "person_id", "corruptions"]
# persons.csv: the household side of the truth, for explaining false merges
PERSON_COLUMNS = [
    "person_id",
    "household_id",
    "role",
    "gender",
    "birth_date",
    "twin",
    "cloned_name",
    "name",
]


@dataclass
class Result:
    """What a generation wrote: records per source, persons, seconds."""

    persons: int
    records: dict[str, int]
    seconds: float

    @property
    def total_records(self) -> int:
        return sum(self.records.values())


def generate(
    persons: int,
    seed: int,
    output: str | Path,
    corruption: float = 1.0,
    profile: str = "standard",
    chunk_persons: int = 200_000,
    log=None,
) -> Result:
    """Generate `persons` persons' registries into `output` (created; files replaced).

    Raises ValueError for a non-positive persons count, a negative corruption factor or an
    unknown profile. Each chunk draws from its own seeded generator, so a set is the same
    for the same (persons, seed, corruption, profile, chunk_persons).
    """
    if persons <= 0:
        raise ValueError(f"--persons must be positive, got {persons}")
    if corruption < 0:
        raise ValueError(f"--corruption must be >= 0, got {corruption}")
    prof = Profile.named(profile)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    counters = Counters()
    record_seq = {s: 0 for s in SOURCES}
    tmp = {s: out / (SOURCES[s][0] + ".part") for s in SOURCES}
    truth_tmp = out / "truth.csv.part"
    handles = {s: open(tmp[s], "wb") for s in SOURCES}
    truth = open(truth_tmp, "w", encoding="utf-8", newline="")
    persons_tmp = out / "persons.csv.part"
    roster = open(persons_tmp, "w", encoding="utf-8", newline="")
    try:
        for s, fh in handles.items():
            headers = list(SOURCES[s][3]) + R.EXTRA[s]
            fh.write((",".join(headers) + "\n").encode(SOURCES[s][1]))
        truth.write(",".join(TRUTH_COLUMNS) + "\n")
        roster.write(",".join(PERSON_COLUMNS) + "\n")
        done = 0
        chunk = 0
        while done < persons:
            n = min(chunk_persons, persons - done)
            rng = np.random.default_rng([seed, chunk])
            people = build_chunk(rng, n, prof, counters)
            member = R.memberships(rng, people)
            tables = {
                "police": R.render_police(rng, people, member["police"], corruption),
                "civil_affairs": R.render_civil(rng, people, member["civil_affairs"], corruption),
                "health": R.render_health(rng, people, member["health"], corruption, prof),
            }
            for s, table in tables.items():
                _append(rng, s, table, handles[s], truth, record_seq)
            _append_persons(people, roster)
            done += len(people)
            chunk += 1
            if log:
                log(
                    f"{done:,} persons, {sum(record_seq.values()):,} records, "
                    f"{time.perf_counter() - t0:.1f} s"
                )
    finally:
        for fh in handles.values():
            fh.close()
        truth.close()
        roster.close()
    os.replace(persons_tmp, out / "persons.csv")
    for s in SOURCES:
        os.replace(tmp[s], out / SOURCES[s][0])
    os.replace(truth_tmp, out / "truth.csv")
    write_configs(out)
    return Result(
        persons=counters.next_person, records=dict(record_seq), seconds=time.perf_counter() - t0
    )


def _append(rng, source: str, table: pd.DataFrame, fh, truth, record_seq: dict[str, int]) -> None:
    """Shuffle, number and write one chunk of one registry, and its truth rows."""
    table = table.iloc[rng.permutation(len(table))]
    start = record_seq[source]
    record_seq[source] += len(table)
    prefix = SOURCES[source][4]
    headers = SOURCES[source][3]
    id_col = next(h for h, f in headers.items() if f == "record_id")
    numbers = np.arange(start + 1, start + 1 + len(table))
    width = 11 if prefix == "0" else 10
    ids = pd.Series(numbers).astype(str).str.zfill(width).radd(prefix).to_numpy()
    body = table.drop(columns=["_person_id", "_corruptions"])
    body.insert(0, id_col, ids)
    # pyarrow's C++ CSV writer is ~10x faster than DataFrame.to_csv on string columns;
    # it writes UTF-8, so the GBK / GB18030 registries are re-encoded (unencodable -> '?').
    buf = io.BytesIO()
    pacsv.write_csv(
        pa.Table.from_pandas(body, preserve_index=False),
        buf,
        pacsv.WriteOptions(include_header=False, quoting_style="none"),
    )
    data = buf.getvalue()
    encoding = SOURCES[source][1]
    if encoding != "utf-8":
        data = data.decode("utf-8").encode(encoding, errors="replace")
    fh.write(data)
    pd.DataFrame(
        {
            "source": source,
            "record_id": ids,
            "person_id": "P" + pd.Series(table["_person_id"].to_numpy()).astype(str),
            "corruptions": table["_corruptions"].to_numpy(),
        }
    ).to_csv(truth, header=False, index=False, lineterminator="\n")


def _append_persons(people: pd.DataFrame, fh) -> None:
    pd.DataFrame(
        {
            "person_id": "P" + people["person_id"].astype(str),
            "household_id": "H" + people["household_id"].astype(str),
            "role": people["role"],
            "gender": np.where(people["male"], "M", "F"),
            "birth_date": people["birth"].dt.strftime("%Y-%m-%d"),
            "twin": people["twin"].astype(int),
            "cloned_name": people["cloned"].astype(int),
            "name": people["name"],
        }
    )[PERSON_COLUMNS].to_csv(fh, header=False, index=False, lineterminator="\n")


def write_configs(out: Path) -> None:
    """Write sources/<name>.yaml (record key, encoding, header mapping) and run.yaml."""
    (out / "sources").mkdir(exist_ok=True)
    run = {"sources": {}}
    for s, (file, _, declared, headers, _) in SOURCES.items():
        id_col = next(h for h, f in headers.items() if f == "record_id")
        schema = {
            "record_id": id_col,
            "encoding": declared,
            "columns": {h: f for h, f in headers.items() if f != "record_id"},
        }
        _write_yaml(out / "sources" / f"{s}.yaml", schema)
        run["sources"][s] = {"include": f"sources/{s}.yaml", "path": file}
    _write_yaml(out / "run.yaml", run)


def _write_yaml(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
