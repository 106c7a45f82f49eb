"""Annotating raw text at any size: every input type and output format, the same entities from
one process, two processes and local Ray with two actors, resuming after an interrupted run,
and each kind of bad input (stopped with file and line, or skipped and counted)."""

import json
from pathlib import Path
from typing import Dict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import spacy
from spacy.tokens import DocBin

from scripts import annotate as ann
from scripts import annotate_engines as engines
from scripts import annotate_shards as shards
from scripts.annotate_formats import FORMATS, entities
from scripts.annotate_input import BadInput, Options
from scripts.corpus import atomic_write

from .conftest import run_cli

PATTERNS = {
    "Ada Lovelace": "PER",
    "London": "LOC",
    "Zeus": "MYTH",
    "wolf": "ANIM",
    "cholera": "DIS",
    "Red Cross": "ORG",
}
PLACES = ["London", "Paris", "Rome"]


def text(i: int) -> str:
    words = " ".join(["very"] * (i % 7))  # texts of different lengths
    return (
        f"Ada Lovelace saw a {words} wolf near {PLACES[i % 3]} and Zeus {i}."
        if i % 4
        else f"Cholera and cholera in London {i}."
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "ruler"
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(
        [{"label": v, "pattern": k} for k, v in PATTERNS.items()]
    )
    nlp.to_disk(path)
    return str(path)


def write_inputs(folder: Path, n_txt=23, n_jsonl=17, n_parquet=15) -> Dict:
    """A folder of all three input types; returns {id: text} of every record."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    with open(folder / "a.txt", "w", encoding="utf-8") as f:
        for i in range(n_txt):
            f.write(text(i) + "\n")
            expected[f"a.txt:{i + 1}"] = text(i)
    (folder / "more").mkdir(exist_ok=True)
    with open(folder / "more" / "b.jsonl", "w", encoding="utf-8") as f:
        for i in range(n_jsonl):
            row = {"text": text(100 + i), "source": "web", "meta": {"n": i}}
            if i % 2:
                row["id"] = f"doc-{i}"
            f.write(json.dumps(row) + "\n")
            expected[f"doc-{i}" if i % 2 else f"more/b.jsonl:{i + 1}"] = text(100 + i)
    rows = [{"id": f"pq-{i}", "text": text(200 + i), "year": 2000 + i} for i in range(n_parquet)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "c.parquet", row_group_size=4)
    expected.update({r["id"]: r["text"] for r in rows})
    return expected


def read_output(out: Path, fmt="jsonl") -> Dict:
    """{id: (entities, other fields)} of every shard."""
    got = {}
    for part in sorted(out.glob(f"part-*{FORMATS[fmt].suffix}")):
        if fmt == "jsonl":
            rows = [json.loads(line) for line in part.read_text(encoding="utf-8").splitlines()]
        elif fmt == "parquet":
            rows = pq.read_table(part).to_pylist()
        else:
            nlp = spacy.blank("en")
            rows = [
                {"id": d.user_data["id"], "entities": entities(d), **d.user_data["fields"]}
                for d in DocBin().from_disk(part).get_docs(nlp.vocab)
            ]
        for row in rows:
            rid = row.pop("id")
            assert rid not in got, f"{rid} twice"
            got[rid] = (row.pop("entities"), {k: v for k, v in row.items() if v is not None})
    return got


def expected_entities(model, texts: Dict) -> Dict:
    nlp = spacy.load(model)
    return {rid: entities(nlp(t)) for rid, t in texts.items()}


def run(model, source, out, engine="local", **kwargs):
    opts = Options(**{k: kwargs.pop(k) for k in list(kwargs) if k in Options.__dataclass_fields__})
    return ann.annotate(model, source, out, opts, engine=engine, **kwargs)


def test_every_input_type_gives_ids_entities_and_the_other_fields(model, tmp_path):
    texts = write_inputs(tmp_path / "in")
    summary = run(model, tmp_path / "in", tmp_path / "out", shard_size=10)
    got = read_output(tmp_path / "out")
    assert set(got) == set(texts)
    want = expected_entities(model, texts)
    assert {rid: ents for rid, (ents, _) in got.items()} == want
    assert got["doc-1"][1] == {"source": "web", "meta": {"n": 1}}  # fields kept as they are
    assert got["pq-3"][1] == {"year": 2003}
    assert got["a.txt:5"][1] == {}
    for rid, ents in want.items():  # offsets point at the entity text
        assert all(texts[rid][e["start"] : e["end"]] == e["text"] for e in ents)
    # a.txt: 23 lines in shards of 10 -> 3; b.jsonl: 17 -> 2;
    # c.parquet: row groups of 4 -> 15 rows in 2
    assert summary["shards"] == 3 + 2 + 2 and summary["texts"] == len(texts)
    assert summary["words"] > 0 and summary["errors"] == 0


@pytest.mark.parametrize("fmt", ["parquet", "spacy"])
def test_parquet_and_docbin_outputs_hold_the_same(model, tmp_path, fmt):
    texts = write_inputs(tmp_path / "in")
    run(model, tmp_path / "in", tmp_path / "jsonl", shard_size=10)
    run(model, tmp_path / "in", tmp_path / fmt, shard_size=10, fmt=fmt)
    jsonl, other = read_output(tmp_path / "jsonl"), read_output(tmp_path / fmt, fmt)
    assert {k: v[0] for k, v in other.items()} == {k: v[0] for k, v in jsonl.items()}
    if fmt == "parquet":
        schema = pq.read_schema(next((tmp_path / fmt).glob("part-*.parquet")))
        entity = pa.struct(
            [
                ("start", pa.int64()),
                ("end", pa.int64()),
                ("label", pa.string()),
                ("text", pa.string()),
            ]
        )
        assert (
            pa.types.is_list(schema.field("entities").type)
            and schema.field("entities").type.value_type == entity
        )
    assert len(texts) == len(other)


def test_one_process_two_processes_and_ray_agree(model, tmp_path):
    pytest.importorskip("ray")
    texts = write_inputs(tmp_path / "in", n_txt=61, n_jsonl=33, n_parquet=21)
    outputs = {}
    for name, kwargs in (
        ("single", {}),
        ("two", {"n_process": 2}),
        ("ray", {"engine": "ray", "actors": 2}),
    ):
        summary = run(model, tmp_path / "in", tmp_path / name, shard_size=16, **kwargs)
        assert summary["texts"] == len(texts) and summary["engine"] == kwargs.get("engine", "local")
        outputs[name] = read_output(tmp_path / name)
    assert outputs["single"] == outputs["two"] == outputs["ray"]
    assert {k: v[0] for k, v in outputs["single"].items()} == expected_entities(model, texts)
    for name in outputs:  # shard by shard, byte for byte
        parts = sorted(p.name for p in (tmp_path / name).glob("part-*"))
        assert parts == sorted(p.name for p in (tmp_path / "single").glob("part-*"))
        for part in parts:
            assert (tmp_path / name / part).read_bytes() == (
                tmp_path / "single" / part
            ).read_bytes()


def test_an_interrupted_run_resumes_after_its_finished_shards(model, tmp_path, monkeypatch):
    texts = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    real = engines.annotate_shard
    calls = []

    def dies_on_the_fourth(nlp, shard, *args, **kwargs):
        calls.append(shard.index)
        if len(calls) == 4:
            real_write = shards.write_shard

            def half_written(*a, **k):
                with atomic_write(shards.output_file(out, shard, "jsonl")) as path:
                    path.write_text('{"id": "half a shard')
                    raise KeyboardInterrupt  # stopped while writing: nothing of it may stay

            monkeypatch.setattr(shards, "write_shard", half_written)
            try:
                return real(nlp, shard, *args, **kwargs)
            finally:
                monkeypatch.setattr(shards, "write_shard", real_write)
        return real(nlp, shard, *args, **kwargs)

    monkeypatch.setattr(engines, "annotate_shard", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        run(model, tmp_path / "in", out, shard_size=10)
    assert sorted(p.name for p in out.glob("part-*")) == [
        "part-000000.jsonl",
        "part-000001.jsonl",
        "part-000002.jsonl",
    ]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no half-written file
    assert json.loads((out / "manifest.json").read_text())["shard_size"] == 10
    killed = out / ".part-000004.jsonl.tmp-99999"  # what a killed worker process leaves
    killed.write_text('{"id": "half')
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    monkeypatch.setattr(engines, "annotate_shard", real)
    calls.clear()
    resumed = []
    monkeypatch.setattr(
        engines,
        "annotate_shard",
        lambda nlp, shard, *a, **k: resumed.append(shard.index) or real(nlp, shard, *a, **k),
    )
    summary = run(model, tmp_path / "in", out, shard_size=10)
    assert resumed == [3, 4, 5, 6] and summary["shards_skipped"] == 3
    assert not killed.exists()
    assert all(
        out.joinpath(name).stat().st_mtime_ns == t for name, t in before.items()
    )  # not redone
    fresh = tmp_path / "fresh"
    run(model, tmp_path / "in", fresh, shard_size=10)
    assert read_output(out) == read_output(fresh) and len(read_output(out)) == len(texts)


def test_a_resumed_run_with_other_settings_is_refused(model, tmp_path):
    write_inputs(tmp_path / "in")
    run(model, tmp_path / "in", tmp_path / "out", shard_size=10)
    with pytest.raises(BadInput, match="other settings.*shard_size"):
        run(model, tmp_path / "in", tmp_path / "out", shard_size=8)
    run(model, tmp_path / "in", tmp_path / "out", shard_size=8, overwrite=True)
    assert (
        len(list((tmp_path / "out").glob("part-*"))) == 3 + 3 + 2
    )  # 8 rows fit two row groups of 4


BAD = {
    # name: (file, its content, the expected message, the bad line, its good records)
    "not JSON": (
        "x.jsonl",
        '{"text": "Zeus"}\n{"text": "London"\n{"text": "Ada Lovelace"}\n',
        "not valid JSON",
        2,
        2,
    ),
    "no text field": ("x.jsonl", '{"text": "Zeus"}\n{"body": "London"}\n', "no 'text' field", 2, 1),
    "empty text": (
        "x.jsonl",
        '{"text": "Zeus"}\n{"text": " "}\n{"text": "Rome"}\n',
        "empty text",
        2,
        2,
    ),
    "too long": (
        "x.txt",
        "Zeus\n" + "London " * 20 + "\nRome\n",
        "more than the pipeline's max_length (50)",
        2,
        2,
    ),
    "not UTF-8": ("x.txt", b"Zeus\nZ\xfcrich\n", "not UTF-8", 2, 1),
    "not a string": (
        "x.jsonl",
        '{"text": "Zeus"}\n{"text": 42}\n',
        "'text' is not a string (int)",
        2,
        1,
    ),
    # valid JSON, but no Unicode text: spaCy cannot hash it, and no file can hold it
    "lone surrogate": (
        "x.jsonl",
        '{"text": "Zeus"}\n{"text": "a \\ud800 b"}\n{"text": "Rome \\ud83d\\ude00"}\n',
        "field 'text' holds a lone surrogate (\\ud800)",
        2,
        2,
    ),
    "lone surrogate in another field": (
        "x.jsonl",
        '{"text": "Zeus"}\n{"text": "Rome", "meta": {"note": ["\\udc00"]}}\n',
        "field 'meta.note' holds a lone surrogate (\\udc00)",
        2,
        1,
    ),
}


def write_bad(folder: Path, name: str) -> Path:
    file, content = BAD[name][:2]
    folder.mkdir(parents=True)
    (folder / "a_good.txt").write_text("Zeus met Ada Lovelace in London.\n" * 12)  # shards 0 and 1
    path = folder / f"z_{file}"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_stops_with_file_and_line_and_keeps_the_written_shards(model, tmp_path, name):
    bad = write_bad(tmp_path / "in", name)
    with pytest.raises(BadInput) as err:
        run(model, tmp_path / "in", tmp_path / "out", shard_size=10, max_length=50)
    problem, line = BAD[name][2:4]
    assert str(err.value).startswith(f"{bad.name}, line {line}: ") and problem in str(err.value)
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == [
        "part-000000.jsonl",
        "part-000001.jsonl",
    ]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_skipped_recorded_and_counted(model, tmp_path, name):
    bad = write_bad(tmp_path / "in", name)
    summary = run(
        model, tmp_path / "in", tmp_path / "out", shard_size=10, max_length=50, errors="skip"
    )
    problem, line, good = BAD[name][2:]
    errors = [
        json.loads(x)
        for p in (tmp_path / "out" / "errors").glob("*.jsonl")
        for x in p.read_text().splitlines()
    ]
    assert [(e["file"], e["line"]) for e in errors] == [(bad.name, line)] and problem in errors[0][
        "problem"
    ]
    assert summary["errors"] == 1
    got = read_output(tmp_path / "out")
    assert f"{bad.name}:{line}" not in got and f"{bad.name}:1" in got and len(got) == 12 + good


def test_an_unreadable_file_is_named(model, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("Zeus\n")
    (tmp_path / "in" / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(BadInput, match=r"^broken\.parquet: cannot read the file"):
        run(model, tmp_path / "in", tmp_path / "out")
    summary = run(model, tmp_path / "in", tmp_path / "skip", errors="skip")
    assert summary["errors"] == 1 and summary["texts"] == 1
    listed = json.loads((tmp_path / "skip" / "errors" / "unreadable-files.jsonl").read_text())
    assert listed["file"] == "broken.parquet"


def test_cli_reports_bad_input_without_traceback_and_shows_progress(model, tmp_path):
    # a lone surrogate: valid JSON that spaCy and every file writer reject
    bad = write_bad(tmp_path / "in", "lone surrogate")
    result = run_cli(
        "scripts.annotate", model, tmp_path / "in", tmp_path / "out", "--shard-size", "10"
    )
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1 and "Traceback" not in out and "UnicodeEncodeError" not in out
    assert f"{bad.name}, line 2: field 'text' holds a lone surrogate (\\ud800)" in out
    assert "words/s" in result.stderr and "texts" in result.stderr  # the progress bar
    ok = run_cli("scripts.annotate", model, tmp_path / "in", tmp_path / "skip", "--errors", "skip")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 bad records skipped" in " ".join(ok.stdout.split())
    errors = [x for p in (tmp_path / "skip" / "errors").glob("*.jsonl") for x in p.open()]
    assert [(json.loads(e)["file"], json.loads(e)["line"]) for e in errors] == [(bad.name, 2)]
    assert sorted(read_output(tmp_path / "skip")) == sorted(
        [f"a_good.txt:{i}" for i in range(1, 13)] + [f"{bad.name}:1", f"{bad.name}:3"]
    )
    for folder in (tmp_path / "out", tmp_path / "skip"):  # nothing half-written
        assert not [p for p in folder.rglob("*") if p.name.startswith(".")]


def test_line_starts_find_shard_offsets(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"a\nbb\nccc\ndddd\ne")  # 5 lines, the last without a newline
    starts, lines = shards.line_starts(path, 2)
    assert lines == 5 and starts == [0, 5, 14]
    path.write_bytes(b"a\nbb\n")
    assert shards.line_starts(path, 2) == ([0], 2)


def test_line_starts_match_a_plain_split_for_any_chunk_size(tmp_path, monkeypatch):
    import random

    rng = random.Random(0)
    path = tmp_path / "x.txt"
    for _ in range(200):
        lines = [b"x" * rng.randint(0, 5) for _ in range(rng.randint(0, 40))]
        data = b"\n".join(lines) + (b"\n" if lines and rng.random() < 0.5 else b"")
        path.write_bytes(data)
        every = rng.randint(1, 6)
        monkeypatch.setattr(shards, "CHUNK", rng.randint(1, 9))
        n = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        line_offsets = [0] + [i + 1 for i, byte in enumerate(data) if byte == 10][: max(n - 1, 0)]
        offsets = line_offsets[::every] or [0]
        assert shards.line_starts(path, every) == (offsets, n)


def test_a_parquet_file_without_the_text_column(model, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("Zeus in London\n")
    pq.write_table(pa.table({"body": ["Zeus"]}), tmp_path / "in" / "b.parquet")
    with pytest.raises(BadInput, match=r"^b\.parquet: no column 'text' \(columns: body\)"):
        run(model, tmp_path / "in", tmp_path / "out")
    summary = run(model, tmp_path / "in", tmp_path / "skip", errors="skip")
    assert summary["texts"] == 1 and summary["errors"] == 1


@pytest.mark.parametrize(
    "engine,name", [("processes", "empty text"), ("ray", "no text field")], ids=["processes", "ray"]
)
def test_bad_input_elsewhere_reaches_the_user_as_in_one_process(model, tmp_path, engine, name):
    """A bad record in a worker process or a Ray actor stops the run with the BadInput that one
    process raises: the same type and the same one-line message naming file and line."""
    if engine == "ray":
        pytest.importorskip("ray")
    bad = write_bad(tmp_path / "in", name)
    with pytest.raises(BadInput) as here:
        run(model, tmp_path / "in", tmp_path / "one", shard_size=10)
    elsewhere = {"n_process": 2} if engine == "processes" else {"engine": "ray", "actors": 2}
    with pytest.raises(BadInput) as there:
        run(model, tmp_path / "in", tmp_path / "out", shard_size=10, **elsewhere)
    assert type(there.value) is BadInput and str(there.value) == str(here.value)
    assert str(there.value) == f"{bad.name}, line 2: {BAD[name][2]}"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_blank_lines_of_a_text_file_are_skipped_and_the_others_keep_their_line(model, tmp_path):
    (tmp_path / "in").mkdir()
    # shards of 2 lines: the second shard (lines 3-4) holds blank lines only
    (tmp_path / "in" / "a.txt").write_text("Zeus\n\n \n\t\nLondon\r\n\nRome")
    summary = run(model, tmp_path / "in", tmp_path / "out", shard_size=2)
    got = read_output(tmp_path / "out")
    assert sorted(got) == ["a.txt:1", "a.txt:5", "a.txt:7"]
    assert got["a.txt:5"][0] == [{"start": 0, "end": 6, "label": "LOC", "text": "London"}]
    assert summary["texts"] == 3 and summary["errors"] == 0
    assert not (tmp_path / "out" / "errors").exists()


@pytest.mark.parametrize("fmt", ["jsonl", "spacy"])
def test_parquet_columns_json_cannot_hold_are_written_as_text(model, tmp_path, fmt):
    import datetime
    import decimal

    row = {
        "text": "Zeus in London",
        "day": datetime.date(2020, 1, 31),
        "at": datetime.datetime(2020, 1, 31, 12, 30),
        "price": decimal.Decimal("1.50"),
        "raw": b"\x00\xff",
    }
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "in" / "a.parquet")
    run(model, tmp_path / "in", tmp_path / "out", fmt=fmt)
    (ents, fields) = read_output(tmp_path / "out", fmt)["a.parquet:1"]
    assert [e["label"] for e in ents] == ["MYTH", "LOC"]
    assert fields == {
        "day": "2020-01-31",
        "at": "2020-01-31T12:30:00",
        "price": "1.50",
        "raw": "AP8=",
    }


def test_project_command_reads_relative_paths_from_where_the_user_stands(model, tmp_path):
    """`spacy project run annotate <project>` from another folder: the paths the user gives
    are read from that folder, the default pipeline from the project folder."""
    import shutil

    from .conftest import copy_project

    project, user = copy_project(tmp_path / "project"), tmp_path / "user"
    shutil.copytree(model, project / "training" / "en_multinerd_a_trf" / "model-best")
    (user / "texts").mkdir(parents=True)
    (user / "texts" / "a.txt").write_text("Zeus\n\nAda Lovelace in London\n")
    args = ["spacy", "project", "run", "annotate", project, "--vars.gpu_id=-1"]
    env = {"PWD": str(user)}  # what the shell tells the command about where the user stands
    result = run_cli(
        *args,
        "--vars.annotate_input=texts",
        "--vars.annotate_output=annotated",
        cwd=user,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    got = read_output(user / "annotated")
    assert sorted(got) == ["a.txt:1", "a.txt:3"]
    assert [e["label"] for e in got["a.txt:3"][0]] == ["PER", "LOC"]
    assert not (project / "annotated").exists()
    missing = run_cli(*args, "--vars.annotate_input=nowhere", cwd=user, env=env)
    said = " ".join((missing.stdout + missing.stderr).split())
    assert missing.returncode == 1 and "Traceback" not in said
    assert (
        f"INPUT (var annotate_input) 'nowhere': no such file or folder (looked for "
        f"{user / 'nowhere'} and {project / 'nowhere'})." in said
    )
