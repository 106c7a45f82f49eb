"""The README and docs/ as a newcomer reads them: the README is short and keeps its test
command, every docs page says first what it is for, every relative link resolves, and every
command they show names what exists (project commands and vars, script modules and their
options, requirements files, repository paths). And the repository speaks of the project
only, not of where it was developed."""

import importlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest
import srsly
import typer

from .conftest import ROOT

README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [README, *PAGES]
MAX_README_LINES = 160


def ids(paths: List[Path]) -> List[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def without_code(text: str) -> str:
    """The text with fenced code blocks and inline code removed (links are not code)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def code_of(text: str) -> str:
    """Everything a reader may copy: fenced blocks and inline code, with the backslash line
    continuations of shell commands joined."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))
    return re.sub(r"\\\n\s*", " ", "\n".join(blocks + inline))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    heading = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading))


def anchors(path: Path) -> List[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return [slug(h) for h in re.findall(r"^#+\s+(.*)$", text, flags=re.M)]


def project() -> Dict:
    return srsly.read_yaml(ROOT / "project.yml")


def readme_block(marker: str) -> List[str]:
    """The lines of the fenced code block after `<!-- marker -->` in the README."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"<!-- {marker} -->") + 1
    assert lines[start] == "```bash", f"no code block after <!-- {marker} -->"
    return [line for line in lines[start + 1 : lines.index("```", start + 1)] if line]


def test_readme_is_short_and_keeps_its_test_command():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"
    assert readme_block("test-command")[-1] == "python -m pytest"


def test_ci_runs_the_readme_lines_and_sets_up_nothing_else():
    """.ci/run runs the README's lint block and its set-up and test block, in that order, with
    the pip of a fresh venv: no install or upgrade of its own; and the README pins one torch."""
    ci = ROOT / ".ci" / "run"
    listed = subprocess.run(["bash", str(ci), "--print"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == readme_block("lint-command") + readme_block("test-command")
    own = [
        ln for ln in ci.read_text(encoding="utf-8").splitlines() if not ln.lstrip().startswith("#")
    ]
    assert not [ln for ln in own if re.search(r"\b(install|upgrade|ensurepip)\b", ln, re.I)]
    torches = set(re.findall(r"pip install torch==(\S+)", README.read_text(encoding="utf-8")))
    assert len(torches) == 1, f"the README installs torch {sorted(torches)}: one version"


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_each_docs_page_starts_with_what_it_is_for(page):
    paragraphs = [p for p in page.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    assert paragraphs[0].startswith("# ") and "\n" not in paragraphs[0].strip()
    assert paragraphs[1].startswith("This page is for "), paragraphs[1][:80]


def test_the_readme_links_every_docs_page():
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", README.read_text(encoding="utf-8")))
    assert linked == {str(p.relative_to(ROOT)) for p in PAGES}


@pytest.mark.parametrize("document", DOCUMENTS, ids=ids(DOCUMENTS))
def test_every_relative_link_resolves(document):
    links = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", without_code(document.read_text("utf-8")))
    assert links, "no links found: the parser is broken"
    for link in links:
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        assert path.exists(), f"{link}: no such file"
        assert path.is_relative_to(ROOT), f"{link}: outside the repository"
        if anchor:
            assert path.suffix == ".md" and anchor in anchors(path), f"{link}: no such heading"


def project_runs(document: Path) -> List[List[str]]:
    """The arguments of every `spacy project run` a reader may copy from the document."""
    runs = []
    for line in code_of(document.read_text(encoding="utf-8")).splitlines():
        for rest in re.findall(r"spacy project run (.*)", line):
            args = shlex.split(re.split(r"\s#|[|;&]", rest)[0])
            if not args[0].startswith("<"):  # `spacy project run <command>`
                runs.append(args)
    return runs


def var_overrides(run: List[str]) -> Dict:
    """The --vars.X=Y of a `spacy project run`, parsed as weasel parses them."""
    from weasel.util import parse_config_overrides

    overrides = parse_config_overrides([a for a in run[1:] if a.startswith("--")], env_var=None)
    assert all(k.startswith("vars.") for k in overrides), f"not a var: {list(overrides)}"
    return overrides


def loaded_project(tmp_path: Path, run: List[str]) -> Dict:
    """project.yml as weasel loads it for `spacy project run` with these arguments: its
    vars overridden by the --vars.X=Y given (weasel stops on a var project.yml lacks)."""
    from weasel.util import load_project_config

    overrides = var_overrides(run)
    shutil.copy(ROOT / "project.yml", tmp_path / "project.yml")  # weasel makes its folders
    try:
        return load_project_config(tmp_path, overrides=overrides)
    except SystemExit:
        pytest.fail(f"spacy project run {' '.join(run)}: weasel refuses its vars")


def run_scripts(tmp_path: Path, run: List[str]) -> str:
    """The scripts, after weasel's substitution of the vars, of what the run runs."""
    config = loaded_project(tmp_path, run)
    names = {c["name"] for c in config["commands"]} | set(config["workflows"])
    assert run[0] in names, f"`spacy project run {run[0]}`: no such command in project.yml"
    steps = config["workflows"].get(run[0], [run[0]])
    return " ".join(s for c in config["commands"] if c["name"] in steps for s in c["script"])


@pytest.mark.parametrize("document", DOCUMENTS, ids=ids(DOCUMENTS))
def test_every_project_run_shown_loads_in_weasel_with_its_vars(document, tmp_path):
    """Each `spacy project run` shown names a command or workflow, and each --vars.X=Y a var
    of project.yml (weasel itself ignores an unknown one) that changes what the run runs."""
    known = project()["vars"]
    for run in project_runs(document):
        scripts = run_scripts(tmp_path, run)
        for i, option in enumerate(run):
            if option.startswith("--vars."):
                var = option.partition("=")[0][len("--vars.") :]
                assert var in known, f"{option}: no such var in project.yml"
                probe = run[:i] + [f"--vars.{var}=__probe__"] + run[i + 1 :]
                assert run_scripts(tmp_path, probe) != scripts, f"{run}: {option} changes nothing"


def test_the_readme_wheel_is_what_its_run_builds(tmp_path):
    """The wheel the README installs is an output of `package` with the vars of one of the
    README's `spacy project run all` lines."""
    wheels = re.findall(r"pip install (packages/\S+\.whl)", README.read_text(encoding="utf-8"))
    built = set()
    for run in project_runs(README):
        if run[0] == "all":
            config = loaded_project(tmp_path, run)
            built |= {o for c in config["commands"] if c["name"] == "package" for o in c["outputs"]}
    # the package step's output is the wheel's folder, packages/<name>-<version>/dist, and
    # spaCy names an English package's wheel as its folder: <name>-<version>-py3-none-any.whl
    for wheel in wheels:
        folder, name = wheel.rsplit("/", 1)
        assert folder in built, f"{wheel} not in any of {sorted(built)}"
        assert name == f"{folder.split('/')[1]}-py3-none-any.whl", wheel
    assert wheels


@pytest.mark.parametrize("document", DOCUMENTS, ids=ids(DOCUMENTS))
def test_every_project_step_and_var_named_exists(document):
    config = project()
    names = {c["name"] for c in config["commands"]} | set(config["workflows"])
    text = " ".join(document.read_text(encoding="utf-8").replace("\\\n", " ").split())
    for named in re.findall(r"`([\w-]+)`(?:/`([\w-]+)`)? (?:steps?|command)\b", text):
        for n in filter(None, named):  # "the `evaluate` step", "`train-a`/`train-b` steps"
            assert n in names, f"the `{n}` step: no such command in project.yml"
    for var in re.findall(r"--vars\.(\w+)", text):
        assert var in config["vars"], f"--vars.{var}: no such var in project.yml"
    table_rows = document.read_text(encoding="utf-8")
    for name in re.findall(r"^\| `([\w-]+)`(?:, `([\w-]+)`)? \|", table_rows, flags=re.M):
        for n in filter(None, name):  # the first column of the command and var tables
            assert n in names or n in config["vars"] or n in {"bench-*"}, f"`{n}` in a table"


def script_options(module_name: str) -> set:
    module = importlib.import_module(module_name)
    app = typer.Typer()
    app.command()(module.main)
    command = typer.main.get_command(app)
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=ids(DOCUMENTS))
def test_every_script_module_and_option_shown_exists(document):
    code = code_of(document.read_text(encoding="utf-8"))
    for line in code.splitlines():
        for module, args in re.findall(r"python -m ((?:scripts|benchmarks)\.\w+)([^#|;&]*)", line):
            assert (ROOT / (module.replace(".", "/") + ".py")).exists(), f"{module}: no module"
            options = script_options(module)
            for flag in re.findall(r"(?<!\S)(--[\w-]+)", args):
                assert flag in options, f"python -m {module} {flag}: no such option"
    for name in re.findall(r"-r (requirements[\w-]*\.txt)", code):
        assert (ROOT / name).exists(), f"-r {name}: no such file"


MADE_BY_THE_READER = {"configs/mine.cfg"}  # "copy configs/trf.cfg to configs/mine.cfg"


@pytest.mark.parametrize("document", DOCUMENTS, ids=ids(DOCUMENTS))
def test_every_repository_path_shown_exists(document):
    code = code_of(document.read_text(encoding="utf-8"))
    shown = re.findall(
        r"(?<![\w/.-])((?:configs|scripts|benchmarks|docs|tests)/[\w/.-]+\.\w+|"
        r"requirements[\w-]*\.txt|project\.yml)",
        code,
    )
    for path in set(shown) - MADE_BY_THE_READER:
        assert (ROOT / path).exists(), f"{path}: not in the repository"


RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def at_commit(commit: str, path: str) -> str:
    """The text of `path` at `commit` of the repository's history ("" if it has none)."""
    shown = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True
    )
    return shown.stdout if shown.returncode == 0 else ""


def test_every_command_in_results_is_in_the_tree_or_names_the_commit_that_had_it():
    """Each `python -m` module, script or config and `spacy project run` command named in
    benchmarks/RESULTS.md exists, or its paragraph names a commit of the history that has it."""
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("needs the repository's history (git)")
    commands = {c["name"] for c in project()["commands"]} | set(project()["workflows"])
    checked = 0
    for paragraph in re.split(r"\n\s*\n", RESULTS.read_text(encoding="utf-8")):
        flat = " ".join(paragraph.split())
        commits = re.findall(r"\bcommit ([0-9a-f]{7,40})\b", flat, flags=re.I)
        modules = re.findall(r"python -m ((?:scripts|benchmarks)\.\w+)", flat)
        files = [m.replace(".", "/") + ".py" for m in modules] + re.findall(
            r"(?<![\w/.-])((?:scripts|benchmarks|configs)/[\w/-]+\.(?:py|cfg))", flat
        )
        for path in files:
            assert (ROOT / path).exists() or any(at_commit(c, path) for c in commits), (
                f"{path}: not in the tree, and no commit beside it that has it: {flat[:150]}"
            )
        for name in re.findall(r"spacy project run ([\w-]+)", flat):
            assert name in commands or any(
                f"- name: {name}\n" in at_commit(c, "project.yml") for c in commits
            ), f"spacy project run {name}: no such command, and no commit beside it that has it"
        checked += len(files) + len(modules)
    assert checked > 20, "the parser found too few commands"


# --- the repository speaks of the project only ---------------------------------------------
# The patterns are built from parts, so that this file does not match them itself.
WHERE_IT_WAS_MADE = [
    "dev" + r"ice (tool|budget|time)",
    r"\b" + "le" + r"nt\b",  # a borrowed GPU or machine
    "KIN" + r"DS\.md",
    "DEVICE" + "_LIMIT",
    r"\bour "
    + r"(\d+[- ]core|cpu|gpu|dev|development|own|build)?[ -]?(machine|box|vm|server|node)s?\b",
    r"\bour \d+[- ]" + "core",
    r"\b(the|this) project's " + r"(\d+[- ]core |cpu |gpu |own )?(machine|box|vm|server)",
    r"this " + r"machine's disk",
    r"/opt/" + r"(wheels|pypi)",
]


def tracked_files() -> List[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
        return [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # an export without git
        skip = {".git", ".venv", "assets", "corpus", "training", "packages", "__pycache__"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


def test_nothing_speaks_of_where_the_project_was_developed():
    pattern = re.compile("|".join(WHERE_IT_WAS_MADE), re.I)
    hits = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # pictures
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_no_package_index_address_is_written():
    """pip knows where the Python Package Index is, and a user's pip may be configured for
    another: the project names no index's address (PyTorch's CPU build is named in words)."""
    # built from parts, so that this file does not match it itself
    pattern = re.compile(
        r"(pypi|pythonhosted)\." + r"org|download\." + r"pytorch\.org|/sim" + r"ple\b"
    )
    hits = []
    for path in tracked_files():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError):
            continue
        hits += [
            f"{path.relative_to(ROOT)}:{n}" for n, ln in enumerate(lines, 1) if pattern.search(ln)
        ]
    allowed = {"tests/test_check_install.py"}  # an unreachable index and a mirror, both made up
    assert {h.split(":")[0] for h in hits} <= allowed, hits


@pytest.mark.parametrize(
    "line",
    [
        "measured on our 2-" + "core machine",
        "on our CPU " + "machine",
        "the project's CPU " + "machine (2 cores)",
        "the GPU we were le" + "nt",
        "everything on this " + "machine's disk",
        "see KIN" + "DS.md",
    ],
)
def test_the_scan_finds_what_it_looks_for(line):
    assert re.search("|".join(WHERE_IT_WAS_MADE), line, re.I)
