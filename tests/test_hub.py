"""The hub side of fetch and train: only MultiNERD's English files are downloaded (checked on a
local directory laid out like the hub repository, and on the download calls), a missing
network fails within seconds with only the clear message, and files downloaded once are read
from the Hugging Face cache without a network."""

import json
import time
from pathlib import Path

import huggingface_hub
import pytest

from scripts import fetch, hub
from scripts.corpus import DataError
from scripts.labels import (
    MULTINERD_HUB_FILES,
    MULTINERD_HUB_ID,
    MULTINERD_LANGUAGES,
    MULTINERD_TAGS,
    SPLITS,
)
from scripts.tiny_transformer import build_tiny_transformer, fixture_texts

from .conftest import FIXTURE, ROOT, fetch_error, read_rows, run_cli

HUB_DIRS = {"train": "train", "dev": "val", "test": "test"}
FIXTURE_FILES = {"train": "train.jsonl", "dev": "validation.jsonl", "test": "test.jsonl"}
# no network and no offline variable: the libraries would retry; the hub answers nowhere
UNREACHABLE = {
    "HF_HUB_OFFLINE": "",
    "HF_DATASETS_OFFLINE": "",
    "TRANSFORMERS_OFFLINE": "",
    "HF_ENDPOINT": "http://127.0.0.1:9",
}


def english(split):
    return [r for r in read_rows(FIXTURE / FIXTURE_FILES[split]) if r["lang"] == "en"]


def write_jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def hub_layout(root: Path) -> Path:
    """A directory laid out like the hub repository: every language's file of every split.
    Only the English files hold data; the others are not even JSON, so reading one fails."""
    for split, folder in HUB_DIRS.items():
        for lang in MULTINERD_LANGUAGES:
            path = root / folder / f"{folder}_{lang}.jsonl"
            if lang == "en":
                write_jsonl(path, english(split))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"not JSON: the {lang} file must not be read\n")
    (root / "README.md").write_text("---\nlicense: cc-by-nc-sa-4.0\n---\n")
    return root


def test_hub_files_are_the_english_ones():
    assert MULTINERD_HUB_FILES == {
        "train": "train/train_en.jsonl",
        "dev": "val/val_en.jsonl",
        "test": "test/test_en.jsonl",
    }
    assert len(MULTINERD_LANGUAGES) == 10 and "en" in MULTINERD_LANGUAGES


def test_a_local_copy_of_the_hub_repository_reads_only_english(tmp_path):
    splits = fetch.load("multinerd", str(hub_layout(tmp_path / "multinerd")))
    for split in SPLITS:
        rows = english(split)
        assert splits[split].tokens.to_pylist() == [r["tokens"] for r in rows]
        assert splits[split].tags.to_pylist() == [
            [MULTINERD_TAGS[i] for i in r["ner_tags"]] for r in rows
        ]
        assert splits[split].where.endswith(MULTINERD_HUB_FILES[split])


def test_the_hub_download_asks_for_the_english_files_only(tmp_path, monkeypatch):
    copy = hub_layout(tmp_path / "hub")
    asked = []

    def fake_download(repo_id, filename, repo_type=None, **kwargs):
        asked.append((repo_id, filename, repo_type))
        return str(copy / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(hub, "use_hub_or_cache", lambda: None)  # as if online
    splits = fetch.load("multinerd", "hub")
    assert sorted(asked) == sorted(
        (MULTINERD_HUB_ID, f, "dataset") for f in MULTINERD_HUB_FILES.values()
    )
    assert [len(splits[s]) for s in SPLITS] == [len(english(s)) for s in SPLITS]


def test_fetch_cli_reads_a_local_hub_copy(tmp_path):
    source = hub_layout(tmp_path / "multinerd")
    out = tmp_path / "assets"
    result = run_cli("scripts.fetch", "multinerd", out, "--source", source)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(read_rows(out / "train.jsonl")) == len(english("train"))


def test_a_hub_copy_without_an_english_file(tmp_path):
    source = hub_layout(tmp_path / "multinerd")
    (source / "val" / "val_en.jsonl").unlink()
    with pytest.raises(DataError) as err:
        fetch.load_hub(str(source))
    assert "val/val_en.jsonl" in str(err.value)


def timed_cli(*args, env):
    start = time.perf_counter()
    result = run_cli(*args, env=env)
    return result, time.perf_counter() - start


def assert_fast_clear_failure(result, seconds, *expected):
    out = result.stdout + result.stderr
    assert result.returncode == 1
    assert seconds < 5.0, f"took {seconds:.1f}s"
    assert "Traceback" not in out and "Retrying" not in out and "Retry" not in out
    assert out.count("✘") == 1
    flat = " ".join(out.split())  # wasabi wraps lines
    for text in expected:
        assert text in flat, out


def test_fetch_without_network_fails_within_seconds(tmp_path):
    env = dict(UNREACHABLE, HF_HOME=str(tmp_path / "hf"))
    result, seconds = timed_cli(
        "scripts.fetch", "multinerd", tmp_path / "out", "--source", "hub", env=env
    )
    assert_fast_clear_failure(
        result,
        seconds,
        "http://127.0.0.1:9 cannot be reached",
        "not in the local cache",
        "'source'",
    )
    assert not (tmp_path / "out").exists()


def test_training_without_network_fails_within_seconds(tmp_path):
    env = dict(UNREACHABLE, HF_HOME=str(tmp_path / "hf"))
    result, seconds = timed_cli(
        "scripts.before_train",
        ROOT / "configs" / "trf.cfg",
        "--transformer",
        "roberta-base",
        env=env,
    )
    assert_fast_clear_failure(
        result, seconds, "http://127.0.0.1:9 cannot be reached", "'roberta-base'", "'transformer'"
    )


def cache_entry(hf_home: Path, kind: str, repo: str, files: dict) -> None:
    """Lay files out as huggingface_hub's cache holds a download of `repo` at main."""
    folder = hf_home / "hub" / f"{kind}s--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    for name, source in files.items():
        target = folder / "snapshots" / commit / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(source).read_bytes())


def test_fetch_without_network_reads_a_cached_download(tmp_path):
    source = hub_layout(tmp_path / "multinerd")
    hf_home = tmp_path / "hf"
    cache_entry(
        hf_home, "dataset", MULTINERD_HUB_ID, {f: source / f for f in MULTINERD_HUB_FILES.values()}
    )
    out = tmp_path / "out"
    env = dict(UNREACHABLE, HF_HOME=str(hf_home))
    result = run_cli("scripts.fetch", "multinerd", out, "--source", "hub", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Reading from the Hugging Face cache" in " ".join(result.stdout.split())
    assert len(read_rows(out / "test.jsonl")) == len(english("test"))


def test_training_without_network_reads_a_cached_transformer(tmp_path):
    tiny = build_tiny_transformer(tmp_path / "tiny", fixture_texts(FIXTURE))
    hf_home = tmp_path / "hf"
    cache_entry(hf_home, "model", "someone/tiny-bert", {p.name: p for p in tiny.iterdir()})
    env = dict(UNREACHABLE, HF_HOME=str(hf_home))
    result = run_cli(
        "scripts.before_train",
        ROOT / "configs" / "trf.cfg",
        "--transformer",
        "someone/tiny-bert",
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())  # wasabi wraps lines
    assert "is read from the Hugging Face cache" in out and "HF_HUB_OFFLINE=1" in out


def test_use_hub_or_cache_switches_to_offline_mode(monkeypatch):
    for name in hub.OFFLINE_VARS:
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    reason = hub.use_hub_or_cache()
    assert reason.startswith("http://127.0.0.1:9 cannot be reached")
    assert all(hub.os.environ[name] == "1" for name in hub.OFFLINE_VARS)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.use_hub_or_cache() == "HF_HUB_OFFLINE is set"


# --- bad input found when tried as a new user ------------------------------------------


def doctored_copy(tmp_path, split, line, **changes) -> Path:
    source = hub_layout(tmp_path / "multinerd")
    path = source / MULTINERD_HUB_FILES[split]
    rows = read_rows(path)
    rows[line - 1].update(changes)
    write_jsonl(path, rows)
    return source


@pytest.mark.parametrize("layout", ["hub copy", "flat files"])
def test_string_tag_ids_are_reported_at_their_line(tmp_path, layout):
    rows = english("dev")
    tags = [str(t) for t in rows[4]["ner_tags"]]
    if layout == "hub copy":
        source = doctored_copy(tmp_path, "dev", 5, ner_tags=tags)
        name = "val_en.jsonl"
    else:  # the fixture's files, other languages included: line 5 is its 3rd English row
        source = tmp_path / "flat"
        for _split, file in FIXTURE_FILES.items():
            write_jsonl(source / file, read_rows(FIXTURE / file))
        all_rows = read_rows(source / "validation.jsonl")
        assert all_rows[4]["lang"] == "en"
        all_rows[4]["ner_tags"] = [str(t) for t in all_rows[4]["ner_tags"]]
        write_jsonl(source / "validation.jsonl", all_rows)
        name = "validation.jsonl"
    message = fetch_error(source)
    assert name in message and "(line 5)" in message
    assert "holds strings" in message and "not integer tag ids" in message
    assert "extension" not in message and "arrow" not in message


def test_an_empty_token_is_rejected_with_file_and_line(tmp_path):
    tokens = list(english("test")[6]["tokens"])
    tokens[2] = ""
    message = fetch_error(doctored_copy(tmp_path, "test", 7, tokens=tokens))
    assert "test_en.jsonl" in message and "(line 7)" in message
    assert "token 3 is an empty string" in message


def test_a_null_tag_id_is_reported_at_its_sentence(tmp_path):
    tags = list(english("train")[3]["ner_tags"])
    tags[1] = None
    message = fetch_error(doctored_copy(tmp_path, "train", 4, ner_tags=tags))
    assert "train_en.jsonl" in message and "(line 4)" in message and "token 2" in message
