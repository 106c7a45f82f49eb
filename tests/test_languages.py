"""Every MultiNERD language: the var `language` keeps exactly its rows (all: every row), builds
its corpus with its tokenizer (Chinese: one character a token, no spaces between), names the
outputs by language, trains a pipeline of that language, scores a pipeline of every language
language by language, and packages it as spaCy names it (xx_ for all); English as before."""

import json
from collections import Counter

import pytest
import spacy
from spacy.tokens import Doc, DocBin

from scripts import convert as convert_mod
from scripts import fetch, report
from scripts.before_train import check_language
from scripts.corpus import LANGUAGE_KEY, DataError, write_jsonl
from scripts.labels import (
    ALL,
    MULTINERD_LANGUAGES,
    SPLITS,
    resolve_transformer,
    spacy_language,
    tokenizer_config,
)
from scripts.train import for_language

from .conftest import FIXTURE, ROOT, copy_project, run_cli, wheel_requirements


def fixture_languages(fixture_rows):
    return Counter(r["lang"] for rows in fixture_rows.values() for r in rows)


def fetch_convert(tmp_path, language, source=FIXTURE):
    splits = fetch.load("multinerd", str(source), language)
    assets = tmp_path / "assets"
    assets.mkdir(parents=True)
    for split in SPLITS:
        write_jsonl(splits[split], assets / f"{split}.jsonl", languages=language == ALL)
    stats = convert_mod.convert("multinerd", assets, tmp_path / "corpus", ["a"], language=language)
    return assets, tmp_path / "corpus" / f"{language}_multinerd_a", stats["a"]


def docs_of(path, language="en"):
    nlp = spacy.blank(spacy_language(language))
    return list(DocBin().from_disk(path).get_docs(nlp.vocab))


def test_the_fixture_has_chinese_and_other_languages(fixture_rows):
    assert set(fixture_languages(fixture_rows)) == {"en", "de", "fr", "zh"}


@pytest.mark.parametrize("language", ["en", "de", "fr", "zh"])
def test_each_language_keeps_exactly_its_rows(language, fixture_rows):
    splits = fetch.load("multinerd", str(FIXTURE), language)
    for split in SPLITS:
        rows = [r for r in fixture_rows[split] if r["lang"] == language]
        assert splits[split].tokens.to_pylist() == [r["tokens"] for r in rows]
        assert set(splits[split].languages.to_pylist()) == {language}


def test_all_keeps_every_row_with_its_language(tmp_path, fixture_rows):
    assets, corpus, stats = fetch_convert(tmp_path, ALL)
    for split in SPLITS:
        lines = [json.loads(x) for x in (assets / f"{split}.jsonl").read_text().splitlines()]
        assert [(r["tokens"], r["lang"]) for r in lines] == [
            (r["tokens"], r["lang"]) for r in fixture_rows[split]
        ]
        assert stats["splits"][split]["languages"] == dict(
            Counter(r["lang"] for r in fixture_rows[split])
        )
    test = docs_of(corpus / "test.spacy", ALL)
    assert [d.user_data[LANGUAGE_KEY] for d in test] == [r["lang"] for r in fixture_rows["test"]]
    assert stats["spacy_language"] == "xx"
    assert set(stats["tokenizer"]["agreement"]) == {"en", "de", "fr", "zh"}


def test_english_outputs_are_written_as_before(tmp_path, fixture_rows):
    """Lines of tokens and tags only, docs separated by spaces without user data: what the
    workflow wrote before it had languages."""
    assets, corpus, stats = fetch_convert(tmp_path, "en")
    rows = [r for r in fixture_rows["dev"] if r["lang"] == "en"]
    lines = (assets / "dev.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == [
        {"tokens": r["tokens"], "tags": [fetch.MULTINERD_TAGS[i] for i in r["ner_tags"]]}
        for r in rows
    ]
    data = DocBin().from_disk(corpus / "dev.spacy")
    assert not data.store_user_data
    assert [d.text for d in data.get_docs(spacy.blank("en").vocab)] == [
        " ".join(r["tokens"]) + " " for r in rows
    ]
    assert stats["language"] == "en" and stats["tokenizer"]["config"] == tokenizer_config("en")


def test_chinese_is_written_without_spaces_and_split_per_character(tmp_path):
    _, corpus, stats = fetch_convert(tmp_path, "zh")
    docs = docs_of(corpus / "test.spacy", "zh")
    assert docs[0].text == "李白住在北京。"
    assert "用iPhone拍照" in docs[2].text  # a Latin word between characters: no space
    assert [(e.text, e.label_) for e in docs[2].ents][-1] == ("iPhone", "MEDIA")
    # the pipeline's tokenizer gives the gold tokens back, the Latin word whole
    tokenizer = convert_mod.pipeline_tokenizer("zh")
    assert [t.text for t in tokenizer(docs[2].text)] == [t.text for t in docs[2]]
    assert stats["tokenizer"]["agreement"]["zh"]["share"] == 1.0
    # a character at the start of a string too (spaCy's infixes split only inside one)
    assert [t.text for t in tokenizer("在2008年北a")] == ["在", "2008", "年", "北", "a"]


def test_the_agreement_counts_the_gold_tokens_the_tokenizer_splits():
    sents = fetch.Sentences.from_lists([["AL-AIN", "won", "."]], [["B-ORG", "O", "O"]], "x")
    enc = convert_mod.EncodedSplit.encode(sents)
    languages = enc.languages("en")
    found = convert_mod.tokenizer_agreement(
        enc, languages, enc.spaces(languages), convert_mod.pipeline_tokenizer("en"), 10
    )
    tokens = [t.text for t in convert_mod.pipeline_tokenizer("en")("AL-AIN won . ")]
    assert tokens == ["AL", "-", "AIN", "won", "."]  # spaCy splits the hyphenated word
    assert found == {"en": {"sentences": 1, "tokens": 3, "reproduced": 2, "share": 2 / 3}}


@pytest.mark.parametrize("language", ["es", "pl", "ru"])
def test_a_language_without_rows_names_it_and_the_languages_found(language):
    with pytest.raises(DataError) as err:
        fetch.load("multinerd", str(FIXTURE), language)
    message = str(err.value)
    assert "train.jsonl" in message and f"lang == '{language}'" in message
    assert "the languages found: en 64, de 5, fr 3, zh 3" in message


def test_an_unknown_language_stops_fetch_in_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "assets"
    result = run_cli("scripts.fetch", "multinerd", out, "--source", FIXTURE, "--language", "xy")
    lines = [x for x in (result.stdout + result.stderr).splitlines() if x.strip()]
    assert result.returncode == 1 and len(lines) == 1, lines
    assert "'language'" in lines[0] and ", ".join(MULTINERD_LANGUAGES) + ", all" in lines[0]
    assert not out.exists()


def test_conll2003_is_english_and_an_iob_corpus_any_language_spacy_has():
    with pytest.raises(DataError, match="conll2003 has en; set the project var 'language'"):
        fetch.check_language("conll2003", "de")
    fetch.check_language("iob", "sv")  # spaCy has Swedish
    with pytest.raises(DataError, match="spaCy has no such language"):
        fetch.check_language("iob", "klingon")


def test_the_tsv_release_is_read_by_the_language_in_its_file_names(tmp_path):
    for lang, word in (("en", "Paris"), ("de", "Berlin")):
        for split in ("train", "dev", "test"):
            (tmp_path / f"{split}_{lang}.tsv").write_text(f"{word}\tB-LOC\nist\tO\n\n")
    german = fetch.load("multinerd", str(tmp_path), "de")
    assert german["test"].tokens.to_pylist() == [["Berlin", "ist"]]
    both = fetch.load("multinerd", str(tmp_path), ALL)
    assert sorted(both["dev"].languages.to_pylist()) == ["de", "en"]
    with pytest.raises(DataError, match=r"names ending in _zh\); the languages found, in files"):
        fetch.load("multinerd", str(tmp_path), "zh")
    unnamed = tmp_path / "unnamed"  # files without a language: the one asked for, not all
    unnamed.mkdir()
    for split in ("train", "dev", "test"):
        (unnamed / f"{split}.tsv").write_text("Paris\tB-LOC\n\n")
    assert fetch.load("multinerd", str(unnamed), "fr")["dev"].languages.to_pylist() == ["fr"]
    with pytest.raises(DataError, match=r"train.tsv: its name carries no language code"):
        fetch.load("multinerd", str(unnamed), ALL)


def test_the_hub_repository_files_of_a_language(tmp_path, fixture_rows):
    """A copy of the hub repository: each language's own three files are read."""
    for lang in ("en", "zh"):
        for split, name in fetch.hub_files(lang).items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = [r for r in fixture_rows[split] if r["lang"] == lang]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    chinese = fetch.load("multinerd", str(tmp_path), "zh")
    assert len(chinese["train"]) == 3
    with pytest.raises(DataError, match="no train/train_de.jsonl"):
        fetch.load("multinerd", str(tmp_path), "de")


def test_the_training_config_follows_the_language():
    config = spacy.util.load_config(
        ROOT / "configs" / "trf.cfg", overrides={"paths.transformer": "default"}
    )
    for language, lang, encoder in (
        ("en", "en", "roberta-base"),
        ("de", "de", "xlm-roberta-base"),
        (ALL, "xx", "xlm-roberta-base"),
    ):
        copy = config.copy()
        for_language(copy, language)
        assert copy["nlp"]["lang"] == lang and copy["paths"]["transformer"] == encoder
        assert copy["nlp"]["tokenizer"] == tokenizer_config(language)
    assert resolve_transformer("/models/mine", "de") == "/models/mine"  # the user's choice stays


def test_an_english_only_encoder_for_another_language_is_warned_about(capsys):
    from transformers import AutoConfig

    bert = AutoConfig.for_model("bert", vocab_size=30522)
    check_language("bert-base-cased", bert, "de")
    assert "bert-base-cased looks English-only" in capsys.readouterr().out
    for name, config in (
        ("xlm-roberta-base", AutoConfig.for_model("xlm-roberta")),
        ("bert-base-multilingual-cased", bert),
        ("bert-base-cased", bert),  # English rows
    ):
        check_language(name, config, "en" if name == "bert-base-cased" else "de")
        assert capsys.readouterr().out == ""


def test_a_pipeline_of_every_language_is_scored_language_by_language(tmp_path):
    nlp = spacy.blank("xx")
    gold, pred = [], []
    for lang, right in (("de", True), ("de", False), ("zh", True)):
        doc = Doc(nlp.vocab, words=["Ada", "lebt"], ents=["B-PER", "O"])
        doc.user_data[LANGUAGE_KEY] = lang
        gold.append(doc)
        pred.append(Doc(nlp.vocab, words=["Ada", "lebt"], ents=["B-PER" if right else "O", "O"]))
    (tmp_path / "zh_multinerd_a_trf.json").write_text(json.dumps({"ents_f": 0.5}))
    scores = report.per_language(pred, gold, "all_multinerd_a_trf", tmp_path)
    assert scores["de"]["sentences"] == 2 and scores["de"]["r"] == 0.5
    assert scores["zh"]["f"] == 1.0 and scores["zh"]["own_pipeline_f"] == 0.5
    assert scores["de"]["own_pipeline_f"] is None  # no German pipeline trained
    section = "\n".join(report.language_section("all_multinerd_a_trf", scores))
    assert "| de | 2 | 100.00 | 50.00 | 66.67 |  |" in section
    assert "| zh | 1 | 100.00 | 100.00 | 100.00 | 50.00 |" in section
    assert report.per_language(pred, [Doc(nlp.vocab, words=["x"])] * 3, "x", tmp_path) == {}


def test_the_vars_name_each_languages_outputs_and_packages():
    from weasel.util import load_project_config

    for language, package in (("en", "en_multinerd_a_trf"), ("de", "de_multinerd_a_trf")):
        config = load_project_config(ROOT, overrides={"vars.language": language})
        assert config["vars"]["name_a"] == f"{language}_multinerd_a_trf"
        (command,) = [c for c in config["commands"] if c["name"] == "package"]
        assert f"packages/{package}-1.0.0/dist" in command["outputs"]
    config = load_project_config(ROOT, overrides={"vars.language": ALL})
    (command,) = [c for c in config["commands"] if c["name"] == "clean"]
    assert "corpus/all_multinerd_a" in command["script"][0]
    assert "en_multinerd" not in " ".join(command["script"])  # English's are kept


@pytest.mark.slow
def test_all_builds_one_xx_pipeline_scored_per_language(tmp_path):
    """language=all through the project's corpus and train-a steps (the CPU config, a few
    steps), then System A's evaluation, report and package as those steps run them: one
    pipeline of spaCy's multi-language class, its report's table by language, an xx_
    package, and the README's English table left alone."""
    project = copy_project(tmp_path / "project")
    vars_ = [f"--vars.source={FIXTURE}", "--vars.language=all", "--vars.config=cnn"]
    vars_ += ["--vars.gpu_id=-1", "--vars.mixed_precision=false", "--vars.max_steps=6"]
    for step in ("corpus", "train-a"):
        run = run_cli("spacy", "project", "run", step, project, *vars_, cwd=project)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    name, code = "all_multinerd_a_cnn", "scripts/architectures.py"
    model, test = f"training/{name}/model-best", "corpus/all_multinerd_a/test.spacy"
    steps = [
        ["spacy", "evaluate", model, test, "--output", f"metrics/{name}.json", "--code", code],
        ["scripts.report", name, "--corpus", "all_multinerd_a", "--readme", "README.md"],
        ["scripts.package_meta", model, "corpus/all_multinerd_a/stats.json"],
        ["scripts.package", model, f"packages/{name}-1.0.0", "--code", code],
    ]
    steps[1] += ["--report", "metrics/all_multinerd_cnn_report"]
    steps[2] += [f"metrics/{name}.json", "packages/meta.json", "--name", "multinerd_a_cnn"]
    steps[2] += ["--version", "1.0.0"]
    steps[3] += ["--meta-path", "packages/meta.json", "--name", "multinerd_a_cnn"]
    steps[3] += ["--version", "1.0.0"]
    for args in steps:
        run = run_cli(*args, cwd=project)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    model = spacy.load(project / model)
    assert model.lang == "xx" and [t.text for t in model.make_doc("北京iPhone")] == [
        "北",
        "京",
        "iPhone",
    ]
    text = (project / "metrics" / "all_multinerd_cnn_report.md").read_text(encoding="utf-8")
    assert f"## Per language: {name}" in text
    for lang in ("de", "en", "fr", "zh"):
        assert f"\n| {lang} | " in text
    wheels = list((project / "packages" / f"{name}-1.0.0" / "dist").glob("*.whl"))
    assert [w.name for w in wheels] == ["xx_multinerd_a_cnn-1.0.0-py3-none-any.whl"]
    requires = wheel_requirements(wheels[0])  # as `spacy package` does: it needs spaCy
    assert list(requires) == ["spacy"] and requires["spacy"].contains(spacy.__version__)
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert readme == (ROOT / "README.md").read_text(encoding="utf-8")  # English's table only
