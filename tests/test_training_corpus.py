"""Training at scale: the streamed training reader (multinerd.StreamedCorpus.v1) and the labels
file that `convert` writes for spacy.read_labels.v1."""

import inspect
from pathlib import Path

import pytest
import spacy
import srsly
from spacy.tokens import Doc, DocBin
from spacy.training.loop import create_train_batches
from spacy.util import load_config, registry

from scripts import architectures
from scripts.architectures import StreamedCorpus

from .conftest import ROOT, run_cli
from .test_corpus import fetch_and_convert

N_SHARDS, PER_SHARD, BUFFER = 5, 40, 25


def write_shards(directory, n_shards=N_SHARDS, per_shard=PER_SHARD):
    """Shards of one-sentence docs "s<i> x", numbered in file order."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = spacy.blank("en").vocab
    for shard in range(n_shards):
        docs = [Doc(vocab, words=[f"s{shard * per_shard + i}", "x"]) for i in range(per_shard)]
        DocBin(docs=docs).to_disk(directory / f"{shard:03d}.spacy")
    return [f"s{i} x " for i in range(n_shards * per_shard)]


def epoch_texts(corpus, nlp):
    return [eg.reference.text for eg in corpus(nlp)]


def test_each_epoch_of_spacys_training_loop_has_every_example_once_in_a_new_order(tmp_path):
    every = write_shards(tmp_path / "train")
    nlp = spacy.blank("en")
    corpus = StreamedCorpus(tmp_path / "train", shuffle=True, buffer=BUFFER, seed=3)
    batcher = registry.batchers.get("spacy.batch_by_words.v1")(
        size=30, tolerance=0.2, discard_oversize=False
    )
    epochs = {}
    for epoch, batch in create_train_batches(nlp, corpus, batcher, max_epochs=-1):
        if epoch == 3:
            break
        epochs.setdefault(epoch, []).extend(eg.reference.text for eg in batch)
    assert sorted(epochs) == [0, 1, 2]
    for texts in epochs.values():
        assert sorted(texts) == sorted(every)  # every example exactly once
        assert texts != every  # not the file order
    assert len({tuple(texts) for texts in epochs.values()}) == 3  # a new order each epoch
    # the files are read in a new order each epoch too: the epochs start in different files
    first_files = {int(texts[0].split()[0][1:]) // PER_SHARD for texts in epochs.values()}
    assert len(first_files) > 1


def test_the_same_seed_gives_the_same_orders(tmp_path):
    write_shards(tmp_path / "train")
    nlp = spacy.blank("en")

    def orders(seed):
        corpus = StreamedCorpus(tmp_path / "train", shuffle=True, buffer=BUFFER, seed=seed)
        return [epoch_texts(corpus, nlp) for _ in range(3)]

    assert orders(7) == orders(7)
    assert orders(7) != orders(8)


def test_at_most_the_buffer_and_one_file_are_held(tmp_path, monkeypatch):
    every = write_shards(tmp_path / "train")
    made = []
    get_docs = DocBin.get_docs

    def counted(self, vocab):
        for doc in get_docs(self, vocab):
            made.append(doc.text)
            yield doc

    monkeypatch.setattr(DocBin, "get_docs", counted)
    nlp = spacy.blank("en")
    for shuffle, bound in ((True, BUFFER + 1), (False, 1)):
        made.clear()
        corpus = StreamedCorpus(tmp_path / "train", shuffle=shuffle, buffer=BUFFER, seed=0)
        held, n = [], 0
        for _example in corpus(nlp):  # the Examples spaCy trains on, one at a time
            n += 1
            held.append(len(made) - n)  # docs read but not yet handed out
        assert n == len(every)
        assert max(held) <= bound  # a reader that listed the corpus would hold 199


def test_limit_keeps_the_first_docs_and_sample_spreads_them(tmp_path):
    every = write_shards(tmp_path / "train")
    nlp = spacy.blank("en")
    limited = StreamedCorpus(tmp_path / "train", shuffle=True, limit=30, seed=1)
    first, second = epoch_texts(limited, nlp), epoch_texts(limited, nlp)
    assert sorted(first) == sorted(second) == sorted(every[:30]) and first != second
    sampled = StreamedCorpus(tmp_path / "train", sample=20)
    assert epoch_texts(sampled, nlp) == every[::10]
    assert epoch_texts(StreamedCorpus(tmp_path / "train", sample=1000), nlp) == every


def test_a_missing_path_or_a_bad_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        StreamedCorpus(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .spacy file"):
        StreamedCorpus(tmp_path / "empty")
    write_shards(tmp_path / "train", n_shards=2)
    (tmp_path / "train" / "001.spacy").write_bytes(b"not a DocBin")
    corpus = StreamedCorpus(tmp_path / "train")
    with pytest.raises(ValueError, match="001.spacy: not a spaCy DocBin"):
        epoch_texts(corpus, spacy.blank("en"))


def test_the_configs_stream_the_training_corpus_and_read_the_labels_file():
    for name in ("cnn", "trf"):
        config = load_config(ROOT / "configs" / f"{name}.cfg", interpolate=False)
        assert config["corpora"]["train"]["@readers"] == "multinerd.StreamedCorpus.v1"
        assert config["corpora"]["train"]["shuffle"] is True
        assert config["training"]["max_epochs"] == -1
        assert 0 < config["corpora"]["dev"]["sample"] <= 10_000
        labels = config["initialize"]["components"]["ner"]["labels"]
        assert labels["@readers"] == "spacy.read_labels.v1" and labels["require"] is True
    # registered by the --code file, scripts/architectures.py, or the copy a package carries
    # (which a test may have loaded since)
    reader = registry.readers.get("multinerd.StreamedCorpus.v1")
    assert reader.__name__ == architectures.streamed_corpus.__name__
    assert Path(inspect.getsourcefile(reader)).name == "architectures.py"


def test_the_labels_file_is_what_spacy_init_labels_writes(tmp_path):
    """`spacy init labels` walking the whole training corpus (max_epochs 0, no labels file)
    writes the very bytes `convert` wrote."""
    _, corpus, _ = fetch_and_convert(tmp_path)
    out = corpus / "en_multinerd_a"
    result = run_cli(
        "spacy",
        "init",
        "labels",
        ROOT / "configs" / "cnn.cfg",
        tmp_path / "init-labels",
        "--code",
        ROOT / "scripts" / "architectures.py",
        "--paths.train",
        out / "train",
        "--paths.dev",
        out / "dev.spacy",
        "--paths.labels",
        tmp_path / "none.json",
        "--initialize.components.ner.labels.require",
        "false",
        "--training.max_epochs",
        "0",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    spacy_file = (tmp_path / "init-labels" / "ner.json").read_bytes()
    assert spacy_file == (out / "labels" / "ner.json").read_bytes()
    assert len(srsly.read_json(out / "labels" / "ner.json")["1"]) == 15


def test_a_pipeline_from_the_labels_file_has_the_classes_of_one_from_the_corpus(tmp_path):
    """The same labels, and the same output classes in the same order, as when NER collects
    them from the whole training corpus (System B: 5 labels)."""
    from spacy.training.initialize import init_nlp

    _, corpus, _ = fetch_and_convert(tmp_path)
    out = corpus / "en_multinerd_b"
    paths = {
        "paths.train": str(out / "train"),
        "paths.dev": str(out / "dev.spacy"),
        "paths.labels": str(out / "labels" / "ner.json"),
    }
    from_file = init_nlp(load_config(ROOT / "configs" / "cnn.cfg", overrides=paths))
    walked = init_nlp(
        load_config(
            ROOT / "configs" / "cnn.cfg",
            overrides={
                **paths,
                "paths.labels": str(tmp_path / "none.json"),
                "initialize.components.ner.labels.require": False,
                "training.max_epochs": 0,
            },
        )
    )
    ner_file, ner_walked = from_file.get_pipe("ner"), walked.get_pipe("ner")
    assert (
        ner_file.labels == ner_walked.labels == tuple(sorted(("PER", "ORG", "LOC", "DIS", "ANIM")))
    )
    assert ner_file.move_names == ner_walked.move_names


def test_convert_refuses_a_shard_size_below_one(tmp_path):
    assets, corpus, _ = fetch_and_convert(tmp_path)
    result = run_cli(
        "scripts.convert", "multinerd", assets, tmp_path / "again", "--shard-size", "0"
    )
    assert result.returncode == 1 and "--shard-size must be at least 1" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "again").exists()
