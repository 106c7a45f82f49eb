"""CoNLL-2003 and any IOB corpus through the same fetch/convert steps, and the offline
encoder's path resolved from an installed package."""

from pathlib import Path

import pytest
import spacy
from seqeval.metrics.sequence_labeling import get_entities
from spacy.tokens import DocBin

from scripts import convert as convert_mod
from scripts import fetch
from scripts.corpus import DataError, write_jsonl
from scripts.encoder import resolve
from scripts.labels import DATASETS, SPLITS

from .conftest import ROOT, run_cli

CONLL = ROOT.parent / "shared" / "data" / "conll2003"


def fetch_convert(tmp_path, dataset, source):
    splits = fetch.load(dataset, str(source))
    assets = tmp_path / "assets"
    assets.mkdir()
    for split in SPLITS:
        write_jsonl(splits[split], assets / f"{split}.jsonl")
    return convert_mod.convert(dataset, assets, tmp_path / "corpus", ["a", "b"])


@pytest.mark.skipif(
    not CONLL.exists(), reason="../shared/data/conll2003 is not beside the checkout"
)
def test_conll2003_real_data_matches_the_published_counts(tmp_path):
    stats = fetch_convert(tmp_path, "conll2003", CONLL)
    a, b = stats["a"], stats["b"]
    assert {s: v["sentences"] for s, v in a["splits"].items()} == DATASETS["conll2003"].sizes
    assert {s: v["tokens"] for s, v in a["splits"].items()} == {
        "train": 203621,
        "dev": 51362,
        "test": 46435,
    }  # the data's README
    assert a["splits"]["train"]["entities"] == DATASETS["conll2003"].references["train"].entities
    assert b["labels"] == ["PER", "ORG", "LOC"]  # System B keeps the types CoNLL has
    assert b["splits"]["test"]["entities"] == {
        t: a["splits"]["test"]["entities"][t] for t in ("PER", "ORG", "LOC")
    }


def write_iob(directory: Path, names, sentences, sep=" "):
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        with open(directory / name, "w", encoding="utf-8") as f:
            f.write("-DOCSTART- O\n\n")
            for sent in sentences:
                f.writelines(f"{tok}{sep}{tag}\n" for tok, tag in sent)
                f.write("\n")


IOB1 = [
    # IOB1: entities start with I-; B- only between two adjacent entities of one type
    [("Alice", "I-PER"), ("Bob", "B-PER"), ("met", "O"), ("Acme", "I-GENE"), ("Corp", "I-GENE")],
    [("in", "O"), ("Paris", "I-LOC"), ("France", "I-LOC")],
]


def test_iob1_two_column_corpus(tmp_path):
    write_iob(tmp_path / "src", ["train.txt", "dev.txt", "test.txt"], IOB1, sep="\t")
    stats = fetch_convert(tmp_path, "iob", tmp_path / "src")
    assert stats["a"]["labels"] == ["GENE", "LOC", "PER"]  # the types found in the files
    docs = list(
        DocBin()
        .from_disk(tmp_path / "corpus/en_iob_a/test.spacy")
        .get_docs(spacy.blank("en").vocab)
    )
    got = [[(e.text, e.label_) for e in d.ents] for d in docs]
    expected = [
        [
            (" ".join(w for w, _ in sent[s : e + 1]), t)
            for t, s, e in get_entities([t for _, t in sent])
        ]
        for sent in IOB1
    ]
    assert (
        got
        == expected
        == [[("Alice", "PER"), ("Bob", "PER"), ("Acme Corp", "GENE")], [("Paris France", "LOC")]]
    )
    assert stats["a"]["splits"]["train"]["i_tags_starting_entities"] == 3
    assert stats["b"]["labels"] == ["PER", "LOC"]


def test_iob_corpus_needs_one_file_a_split(tmp_path):
    write_iob(tmp_path / "src", ["train.txt", "test.txt"], IOB1)
    with pytest.raises(DataError, match="split dev"):
        fetch.load("iob", str(tmp_path / "src"))


def test_scheme_that_keeps_no_type_of_the_corpus_is_an_error(tmp_path):
    genes = [[("BRCA1", "B-GENE"), ("mutates", "O")]]
    write_iob(tmp_path / "src", ["train.txt", "dev.txt", "test.txt"], genes)
    with pytest.raises(DataError, match="scheme 'b' keeps none of the types of iob"):
        fetch_convert(tmp_path, "iob", tmp_path / "src")


def test_conll_line_with_one_column_names_file_and_line(tmp_path):
    write_iob(tmp_path / "src", ["train.txt", "dev.txt"], IOB1)
    (tmp_path / "src" / "test.txt").write_text("Paris I-LOC\n\nRome\n")
    with pytest.raises(DataError, match=r"test\.txt \(split 'test'\), sentence 2 \(line 3\)"):
        fetch.load("iob", str(tmp_path / "src"))


def test_encoder_is_resolved_from_an_installed_package(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "fake_encoder_pkg"
    model = pkg / "data" / "models" / "tiny"
    model.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name in ("config.json", "tokenizer_config.json", "model.safetensors"):
        (model / name).write_text("{}")
    (pkg / "data" / "config.json").write_text("{}")  # no weights beside it: not a model
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert resolve("fake_encoder_pkg") == model
    link = tmp_path / "assets" / "encoders" / "fake_encoder_pkg"
    result = run_cli(
        "scripts.encoder", "fake_encoder_pkg", link, env={"PYTHONPATH": str(tmp_path / "site")}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert link.resolve() == model.resolve()
    with pytest.raises(LookupError, match="not installed"):
        resolve("no_such_encoder_package")
