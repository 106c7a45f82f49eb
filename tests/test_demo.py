"""The demo page, run headless by streamlit's AppTest on two tiny pipelines: both columns, the
entities with their labels and fixed colours, the examples, and the scores from the meta. And
the project's `demo` command: the address it listens on, and no usage statistics."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("spacy_streamlit")

import spacy  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from scripts.labels import ENTITY_COLORS, MULTINERD_TYPES, SCHEMES  # noqa: E402

from .conftest import ROOT  # noqa: E402

PATTERNS = {
    "John Snow": "PER",
    "cholera": "DIS",
    "Soho": "LOC",
    "Broad Street": "LOC",
    "rats": "ANIM",
    "plague": "DIS",
    "Yunnan": "LOC",
    "olive tree": "PLANT",
    "Boeing 747": "VEHI",
    "basmati rice": "FOOD",
    "Delhi": "LOC",
    "London": "LOC",
}


def tiny_pipeline(path, keep, meta):
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [{"label": lab, "pattern": text} for text, lab in PATTERNS.items() if lab in keep]
    )
    nlp.meta.update(meta)
    nlp.to_disk(path)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    per_type = {t: {"p": 0.9, "r": 0.8, "f": 0.847} for t in MULTINERD_TYPES}
    a = tiny_pipeline(
        base / "a",
        MULTINERD_TYPES,
        {
            "name": "tiny_a",
            "performance": {"ents_f": 0.8, "ents_per_type": per_type, "split": "test"},
        },
    )
    b = tiny_pipeline(
        base / "b",
        SCHEMES["b"].types,
        {
            "name": "tiny_b",
            "performance": {
                "ents_f": 0.7,
                "ents_per_type": {t: per_type[t] for t in SCHEMES["b"].types},
            },
        },
    )
    return a, b


def page(model_a, model_b):
    from scripts.demo import render

    render(model_a, model_b)


def run_page(models):
    at = AppTest.from_function(
        page, kwargs={"model_a": models[0], "model_b": models[1]}, default_timeout=120
    )
    at.run()
    assert not at.exception, at.exception
    return at


def column_html(column) -> str:
    return " ".join(str(m.value) for m in column.markdown)


def test_both_systems_side_by_side_with_fixed_colours(models):
    at = run_page(models)
    assert [h.value for h in at.subheader] == ["System A: tiny_a", "System B: tiny_b"]
    a, b = at.columns[0], at.columns[1]
    html_a, html_b = column_html(a), column_html(b)
    for text, label in (("cholera", "DIS"), ("rats", "ANIM"), ("John Snow", "PER")):
        for html in (html_a, html_b):  # both systems know these types: same colour in both
            assert text in html and label in html
            assert ENTITY_COLORS[label] in html
    # the entity tables: System A's entities with their labels and offsets
    table_a = a.dataframe[0].value
    assert list(table_a["text"]) == [
        "John Snow",
        "cholera",
        "Soho",
        "Broad Street",
        "rats",
        "plague",
        "Yunnan",
    ]
    assert list(table_a["label_"]) == ["PER", "DIS", "LOC", "LOC", "ANIM", "DIS", "LOC"]
    text = at.text_area[0].value
    assert all(
        text[int(s) : int(e)] == t
        for t, s, e in zip(table_a["text"], table_a["start_char"], table_a["end_char"])
    )


def test_an_example_with_fine_types_system_b_does_not_know(models):
    at = run_page(models)
    at.selectbox[0].select("Plant, food, vehicle").run()
    assert not at.exception
    a, b = at.columns[0], at.columns[1]
    labels_a = set(a.dataframe[0].value["label_"])
    assert {"PLANT", "FOOD", "VEHI", "LOC"} <= labels_a
    assert set(b.dataframe[0].value["label_"]) == {"LOC"}  # B keeps LOC, drops the fine types
    html_a = column_html(a)
    for label in ("PLANT", "FOOD", "VEHI"):
        assert ENTITY_COLORS[label] in html_a and label not in column_html(b).replace("labels:", "")


def test_own_text_and_the_scores_from_the_meta(models):
    at = run_page(models)
    at.text_area[0].input("Rats carried the plague to London.").run()
    assert not at.exception
    assert list(at.columns[0].dataframe[0].value["text"]) == [
        "plague",
        "London",
    ]  # case-sensitive ruler
    captions = [c.value for c in at.caption]
    assert any("Per-type scores on the test split; overall F1 80.00" in c for c in captions)
    assert any("dev (best during training)" in c for c in captions)  # B's meta has no test split
    scores_b = at.columns[1].dataframe[-1].value
    assert list(scores_b["type"]) == list(SCHEMES["b"].types) and list(scores_b["F1"]) == [84.7] * 5


def test_colours_cover_every_type_and_differ():
    assert set(MULTINERD_TYPES) <= set(ENTITY_COLORS)
    assert len(set(ENTITY_COLORS.values())) == len(ENTITY_COLORS)


def listening_addresses(port: int) -> set:
    """The addresses that sockets of this machine listen on at `port` (Linux's /proc/net)."""
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if width == 8:  # IPv4, little-endian
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # IPv6, four little-endian words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_the_demo_command_listens_on_localhost_only_and_sends_no_statistics(models):
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "spacy", "project", "run", "demo", str(ROOT)]
    cmd += [f"--vars.demo_a={models[0]}", f"--vars.demo_b={models[1]}", f"--vars.demo_port={port}"]
    env = {**os.environ, "STREAMLIT_SERVER_HEADLESS": "true"}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,  # its own process group: stopped with streamlit, its child
    )
    try:
        deadline, addresses = time.monotonic() + 90, set()
        while not addresses and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            addresses = listening_addresses(port)
        time.sleep(1)  # a second socket (IPv6, say) would be open by now
        addresses = listening_addresses(port)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    assert addresses == {"127.0.0.1"}, output
    assert f"URL: http://127.0.0.1:{port}" in output and "Network URL" not in output
    assert "usage statistics" not in output
