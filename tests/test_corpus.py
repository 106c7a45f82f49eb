"""The corpus step: fetch (English filter, sources, bad input) and convert (schemes, stats,
DocBin contents, official counts, atomic output)."""

import json
from dataclasses import replace
from pathlib import Path

import pyarrow
import pyarrow.parquet as pq
import pytest
import spacy
from seqeval.metrics.sequence_labeling import get_entities
from spacy.tokens import Doc, DocBin

from scripts import convert as convert_mod
from scripts import fetch
from scripts.corpus import DataError, EncodedSplit, Sentences, read_jsonl, write_jsonl
from scripts.labels import DATASETS, MULTINERD_TAGS, MULTINERD_TYPES, SCHEMES, SPLITS, Reference

from .conftest import FIXTURE, HUB_SPLIT_FILES, copy_project, fetch_error, read_rows, run_cli

SCHEME_B = ("PER", "ORG", "LOC", "DIS", "ANIM")


def english(rows):
    return [r for r in rows if r["lang"] == "en"]


def tag_names(row):
    return [MULTINERD_TAGS[i] for i in row["ner_tags"]]


def restrict(tags, keep):
    """The scheme rule, written independently: other types become O."""
    return [t if t == "O" or t[2:] in keep else "O" for t in tags]


def expected_entities(tags):
    """(type, start, end_exclusive) as seqeval reads the tags."""
    return [(t, s, e + 1) for t, s, e in get_entities(list(tags))]


def fetch_and_convert(tmp_path, source=FIXTURE, dataset="multinerd"):
    assets, corpus = tmp_path / "assets", tmp_path / "corpus"
    splits = fetch.load(dataset, str(source))
    assets.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_jsonl(splits[split], assets / f"{split}.jsonl")
    stats = convert_mod.convert(dataset, assets, corpus, list(SCHEMES))
    return assets, corpus, stats


def load_docs(path: Path):
    """The docs of a .spacy file, or of a directory's .spacy files in name order."""
    nlp = spacy.blank("en")
    files = sorted(path.glob("*.spacy")) if path.is_dir() else [path]
    return [doc for f in files for doc in DocBin().from_disk(f).get_docs(nlp.vocab)]


def split_docs(corpus_dir: Path, split: str):
    """A split's docs in the source order: the training shards' docs put back in place."""
    if split != "train":
        return load_docs(corpus_dir / f"{split}.spacy")
    docs = load_docs(corpus_dir / "train")
    order = [i for shard in convert_mod.shards(len(docs), convert_mod.SHARD_SIZE, 0) for i in shard]
    in_place = [None] * len(docs)
    for doc, i in zip(docs, order):
        in_place[i] = doc
    return in_place


# --- fetch -------------------------------------------------------------------------------


def test_fetch_keeps_english_rows_only_and_maps_official_ids(fixture_rows):
    splits = fetch.load("multinerd", str(FIXTURE))
    for split in SPLITS:
        rows = english(fixture_rows[split])
        assert len(rows) < len(fixture_rows[split])  # the fixture has other languages
        assert splits[split].tokens.to_pylist() == [r["tokens"] for r in rows]
        assert splits[split].tags.to_pylist() == [tag_names(r) for r in rows]


def test_official_id_map():
    # the hub's README order, which tner/multinerd does not follow (LOC/ORG, PLANT/MYTH)
    assert MULTINERD_TAGS[3:7] == ("B-ORG", "I-ORG", "B-LOC", "I-LOC")
    assert MULTINERD_TAGS[23:27] == ("B-MYTH", "I-MYTH", "B-PLANT", "I-PLANT")
    assert len(MULTINERD_TAGS) == 31 and len(MULTINERD_TYPES) == 15


def test_tsv_and_parquet_sources_give_the_same_sentences(tmp_path, fixture_rows):
    tsv, parquet = tmp_path / "tsv", tmp_path / "parquet"
    tsv.mkdir(), parquet.mkdir()
    tsv_names = {"train": "train_en.tsv", "dev": "dev_en.tsv", "test": "test_en.tsv"}
    for split, rows in fixture_rows.items():
        with open(tsv / tsv_names[split], "w", encoding="utf-8") as f:
            for row in english(rows):
                f.writelines(f"{w}\t{t}\n" for w, t in zip(row["tokens"], tag_names(row)))
                f.write("\n")
        (tsv / tsv_names[split].replace("_en", "_de")).write_text("Haus\tB-LOC\n\n")
        pq.write_table(pyarrow.Table.from_pylist(rows), parquet / f"{split}.parquet")
    expected = fetch.load("multinerd", str(FIXTURE))
    for source in (tsv, parquet):
        got = fetch.load("multinerd", str(source))
        for split in SPLITS:
            assert got[split].tokens.to_pylist() == expected[split].tokens.to_pylist()
            assert got[split].tags.to_pylist() == expected[split].tags.to_pylist()


def test_fetch_cli_writes_assets(tmp_path, fixture_rows):
    out = tmp_path / "assets" / "multinerd"
    result = run_cli("scripts.fetch", "multinerd", out, "--source", FIXTURE)
    assert result.returncode == 0, result.stderr
    for split in SPLITS:
        rows = read_rows(out / f"{split}.jsonl")
        assert [r["tags"] for r in rows] == [tag_names(r) for r in english(fixture_rows[split])]
    assert json.loads((out / "source.json").read_text())["sentences"]["train"] == len(
        english(fixture_rows["train"])
    )


def test_unreachable_hub_names_the_var_without_traceback(tmp_path):
    result = run_cli("scripts.fetch", "multinerd", tmp_path / "out", "--source", "hub")
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    assert "Babelscape/multinerd" in output and "'source'" in output
    assert not (tmp_path / "out").exists()


# --- bad input -----------------------------------------------------------------------------


def write_hub_dir(directory: Path, rows_by_split):
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in rows_by_split.items():
        with open(directory / HUB_SPLIT_FILES[split], "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


def doctored(fixture_rows, split, line, **changes):
    rows = {s: [dict(r) for r in rs] for s, rs in fixture_rows.items()}
    rows[split][line - 1].update(changes)
    return rows


def test_tag_id_out_of_range_names_file_and_sentence(tmp_path, fixture_rows):
    row = fixture_rows["dev"][4]  # line 5 of validation.jsonl, an English row
    assert row["lang"] == "en"
    tags = list(row["ner_tags"])
    tags[1] = 31
    write_hub_dir(tmp_path / "d", doctored(fixture_rows, "dev", 5, ner_tags=tags))
    message = fetch_error(tmp_path / "d")
    assert "validation.jsonl" in message and "line 5" in message
    assert "tag id 31" in message and "token 2" in message and "0-30" in message


def test_length_mismatch_names_file_and_sentence(tmp_path, fixture_rows):
    row = fixture_rows["train"][2]
    write_hub_dir(tmp_path / "d", doctored(fixture_rows, "train", 3, ner_tags=row["ner_tags"][:-1]))
    message = fetch_error(tmp_path / "d")
    assert "train.jsonl" in message and "line 3" in message
    assert f"{len(row['tokens'])} tokens but {len(row['tokens']) - 1} tags" in message


def test_empty_split_is_an_error(tmp_path, fixture_rows):
    rows = dict(fixture_rows, test=[r for r in fixture_rows["test"] if r["lang"] != "en"])
    write_hub_dir(tmp_path / "d", rows)
    message = fetch_error(tmp_path / "d")
    assert "test" in message and "no English rows" in message


def test_empty_split_file_in_assets_is_an_error(tmp_path):
    (tmp_path / "dev.jsonl").write_text("")
    with pytest.raises(DataError, match=r"dev\.jsonl: the split is empty"):
        read_jsonl(tmp_path / "dev.jsonl")


def test_tsv_line_without_tab(tmp_path):
    d = tmp_path / "tsv"
    d.mkdir()
    for name in ("train_en.tsv", "dev_en.tsv"):
        (d / name).write_text("Paris\tB-LOC\nis\tO\n\n")
    (d / "test_en.tsv").write_text("Paris\tB-LOC\n\nRome B-LOC\n")
    message = fetch_error(d)
    assert "test_en.tsv" in message and "sentence 2 (line 3)" in message and "no tab" in message


def test_unknown_tsv_tag(tmp_path):
    d = tmp_path / "tsv"
    d.mkdir()
    for name in ("train_en.tsv", "dev_en.tsv"):
        (d / name).write_text("Paris\tB-LOC\n\n")
    (d / "test_en.tsv").write_text("Paris\tB-LOC\n\nRome\tB-CITY\n")
    message = fetch_error(d)
    assert "test_en.tsv" in message and "sentence 2 (line 3)" in message and "B-CITY" in message


@pytest.mark.parametrize("kind", ["tsv", "jsonl"])
def test_non_utf8_file(tmp_path, fixture_rows, kind):
    d = tmp_path / kind
    if kind == "tsv":
        d.mkdir()
        for name in ("train_en.tsv", "test_en.tsv"):
            (d / name).write_text("Paris\tB-LOC\n\n")
        (d / "dev_en.tsv").write_bytes("Paris\tB-LOC\n\nZ".encode() + b"\xfcrich\tB-LOC\n")
        bad, line = "dev_en.tsv", "line 3"
    else:
        write_hub_dir(d, fixture_rows)
        with open(d / "test.jsonl", "ab") as f:
            f.write(b'{"tokens": ["Z\xfcrich"], "ner_tags": [5], "lang": "en"}\n')
        bad, line = "test.jsonl", f"line {len(fixture_rows['test']) + 1}"
    message = fetch_error(d)
    assert bad in message and line in message and "not UTF-8" in message


def test_missing_split_file(tmp_path, fixture_rows):
    write_hub_dir(tmp_path / "d", {k: v for k, v in fixture_rows.items() if k != "dev"})
    assert "split dev" in fetch_error(tmp_path / "d")


def test_cli_reports_bad_input_without_traceback(tmp_path, fixture_rows):
    tags = list(fixture_rows["train"][0]["ner_tags"])
    tags[0] = 99
    write_hub_dir(tmp_path / "d", doctored(fixture_rows, "train", 1, ner_tags=tags))
    result = run_cli("scripts.fetch", "multinerd", tmp_path / "out", "--source", tmp_path / "d")
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "tag id 99" in result.stdout
    assert not (tmp_path / "out").exists()


# --- convert -------------------------------------------------------------------------------


def test_schemes_keep_every_sentence_and_only_their_types(tmp_path, fixture_rows):
    _, corpus, _ = fetch_and_convert(tmp_path)
    for split in SPLITS:
        rows = english(fixture_rows[split])
        for scheme, keep in (("a", MULTINERD_TYPES), ("b", SCHEME_B)):
            docs = split_docs(corpus / f"en_multinerd_{scheme}", split)
            assert [[t.text for t in d] for d in docs] == [r["tokens"] for r in rows]
            for doc, row in zip(docs, rows):
                got = [(e.label_, e.start, e.end) for e in doc.ents]
                assert got == expected_entities(restrict(tag_names(row), keep))
                assert all(e.label_ in keep for e in doc.ents)
    b_labels = {e.label_ for d in load_docs(corpus / "en_multinerd_b/train") for e in d.ents}
    a_labels = {e.label_ for d in load_docs(corpus / "en_multinerd_a/train") for e in d.ents}
    assert b_labels == set(SCHEME_B) and a_labels == set(MULTINERD_TYPES)


def test_stats_match_seqeval_counts(tmp_path, fixture_rows):
    _, corpus, _ = fetch_and_convert(tmp_path)
    for scheme, keep in (("a", MULTINERD_TYPES), ("b", SCHEME_B)):
        stats = json.loads((corpus / f"en_multinerd_{scheme}" / "stats.json").read_text())
        assert stats["labels"] == list(keep)
        for split in SPLITS:
            rows = english(fixture_rows[split])
            ents = [e for r in rows for e in expected_entities(restrict(tag_names(r), keep))]
            s = stats["splits"][split]
            assert s["sentences"] == len(rows)
            assert s["tokens"] == sum(len(r["tokens"]) for r in rows)
            assert s["entities"] == {t: sum(e[0] == t for e in ents) for t in keep}
            assert s["entities_total"] == len(ents)
            assert s["sentences_without_entities"] == sum(
                not expected_entities(restrict(tag_names(r), keep)) for r in rows
            )
    train_a = json.loads((corpus / "en_multinerd_a/stats.json").read_text())["splits"]["train"]
    assert train_a["i_tags_starting_entities"] == 2  # the two ill-formed edge cases


def test_docbin_equals_spacys_own_path(tmp_path):
    """The bulk DocBin writer gives what Doc(..., ents=...) + DocBin.add would."""
    sents = Sentences.from_lists(
        [["Ada", "Lovelace", "met", "Zeus", "in", "New", "York"], ["Hi", "Smith"]],
        [["B-PER", "I-PER", "O", "B-MYTH", "O", "B-LOC", "I-LOC"], ["O", "I-PER"]],
        "mem",
    )
    enc = EncodedSplit.encode(sents)
    labels = ("PER", "LOC")
    iob, label, _ = enc.entities(labels)
    fast = DocBin().from_bytes(enc.docbin_bytes(labels, iob, label))
    nlp = spacy.blank("en")
    ref_docs = [
        Doc(nlp.vocab, words=w, spaces=[True] * len(w), ents=t)
        for w, t in (
            (
                ["Ada", "Lovelace", "met", "Zeus", "in", "New", "York"],
                ["B-PER", "I-PER", "O", "O", "O", "B-LOC", "I-LOC"],
            ),
            (["Hi", "Smith"], ["O", "B-PER"]),
        )
    ]
    ref = DocBin(attrs=["ORTH", "ENT_IOB", "ENT_TYPE"], docs=ref_docs)
    assert fast.attrs == ref.attrs
    for a, b in zip(fast.tokens, ref.tokens):
        assert (a == b).all()
    for a, b in zip(fast.spaces, ref.spaces):
        assert (a == b).all()
    assert fast.span_groups == ref.span_groups and fast.flags == ref.flags
    docs = list(fast.get_docs(nlp.vocab))
    assert [(e.text, e.label_) for e in docs[0].ents] == [
        ("Ada Lovelace", "PER"),
        ("New York", "LOC"),
    ]
    assert docs[1].text == "Hi Smith " and docs[1].ents[0].label_ == "PER"


def test_official_count_check_on_doctored_fixture(tmp_path, monkeypatch, fixture_rows):
    info = DATASETS["multinerd"]
    test_rows = english(fixture_rows["test"])
    counts = {t: 0 for t in MULTINERD_TYPES}
    for row in test_rows:
        for etype, _, _ in expected_entities(tag_names(row)):
            counts[etype] += 1
    # pretend the fixture's test split is the official one: it passes ...
    reference = Reference(len(test_rows), counts)
    monkeypatch.setitem(DATASETS, "multinerd", replace(info, references={"test": reference}))
    fetch_and_convert(tmp_path / "ok")
    # ... and a doctored copy whose ids are shifted for one entity (PER -> ORG) fails
    rows = {s: [dict(r) for r in rs] for s, rs in fixture_rows.items()}
    target = next(r for r in rows["test"] if r["lang"] == "en" and 1 in r["ner_tags"])
    target["ner_tags"] = [3 if t == 1 else 4 if t == 2 else t for t in target["ner_tags"]]
    write_hub_dir(tmp_path / "shifted", rows)
    with pytest.raises(DataError) as err:
        fetch_and_convert(tmp_path / "bad", source=tmp_path / "shifted")
    message = str(err.value)
    assert f"PER {counts['PER'] - 1} (official {counts['PER']})" in message
    assert f"ORG {counts['ORG'] + 1} (official {counts['ORG']})" in message
    assert "LOC" not in message.split("differ")[1].split("Are")[0]
    assert not (tmp_path / "bad" / "corpus" / "en_multinerd_a").exists()
    assert not (tmp_path / "bad" / "corpus" / "en_multinerd_b").exists()


def test_real_reference_counts_are_the_official_ones():
    ref = DATASETS["multinerd"].references["test"]
    assert ref.sentences == DATASETS["multinerd"].sizes["test"] == 32908
    assert sum(ref.entities.values()) == 51290 and set(ref.entities) == set(MULTINERD_TYPES)


def test_failed_convert_leaves_nothing_behind(tmp_path, monkeypatch):
    assets, corpus, _ = fetch_and_convert(tmp_path)
    assert (corpus / "en_multinerd_a" / "train" / "000.spacy").exists()
    original = EncodedSplit.docbin_bytes
    calls = []

    def fail_late(self, labels, iob, label, **kwargs):
        calls.append(labels)
        if len(calls) == 5:  # scheme b, second split (one training shard, dev): a is complete
            raise OSError("disk full")
        return original(self, labels, iob, label, **kwargs)

    monkeypatch.setattr(EncodedSplit, "docbin_bytes", fail_late)
    with pytest.raises(OSError):
        convert_mod.convert("multinerd", assets, corpus, list(SCHEMES))
    leftovers = sorted(p.name for p in corpus.iterdir())
    # scheme a was complete and renamed into place; scheme b left no dir, no temp files
    assert leftovers == ["en_multinerd_a"]
    assert sorted(p.name for p in (corpus / "en_multinerd_a").iterdir()) == [
        "dev.spacy",
        "labels",
        "stats.json",
        "test.spacy",
        "train",
    ]


def test_failed_validation_removes_stale_outputs(tmp_path):
    assets, corpus, _ = fetch_and_convert(tmp_path)
    with open(assets / "dev.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    result = run_cli("scripts.convert", "multinerd", assets, corpus)
    assert result.returncode == 1 and "dev.jsonl" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert list(corpus.iterdir()) == []


def test_spacy_project_runs_the_corpus_steps(tmp_path):
    project = copy_project(tmp_path / "project")
    args = ("spacy", "project", "run", "corpus", project, f"--vars.source={FIXTURE}")
    first = run_cli(*args, cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    for scheme in ("a", "b"):
        out = project / "corpus" / f"en_multinerd_{scheme}"
        for path in ("train/000.spacy", "dev.spacy", "test.spacy", "labels/ner.json"):
            assert (out / path).exists()
    stats = json.loads((project / "corpus/en_multinerd_b/stats.json").read_text())
    assert stats["labels"] == list(SCHEME_B)
    again = run_cli(*args, cwd=project)
    assert "Skipping 'convert': nothing changed" in again.stdout
