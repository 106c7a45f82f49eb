"""Sentences with IOB tags: reading, validation, label schemes, stats and DocBin output.

Shared by `fetch` (which writes assets/<dataset>/{train,dev,test}.jsonl, one
{"tokens": [...], "tags": [...]} object a line) and `convert` (which turns those into
corpus/<dataset>_<scheme>/{train,dev,test}.spacy and stats.json).

Work is done on whole splits as Arrow/NumPy columns rather than sentence by sentence: the
full English MultiNERD (328k sentences, both schemes) converts in seconds, not minutes.
"""

import codecs
import gzip
import io
import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy
import pyarrow
import pyarrow.compute as pc
import pyarrow.json as pa_json
import srsly

from .labels import UNSPACED_LANGUAGES, Reference

# spaCy's ENT_IOB codes: 1 = I, 2 = O, 3 = B (0 = missing annotation).
IOB_I, IOB_O, IOB_B = 1, 2, 3
TAG_RE = re.compile(r"^([BI])-(\S+)$")
JSONL_SCHEMA = pyarrow.schema(
    [
        ("tokens", pyarrow.list_(pyarrow.string())),
        ("tags", pyarrow.list_(pyarrow.string())),
        ("lang", pyarrow.string()),  # written for the language "all" only
    ]
)


class DataError(ValueError):
    """Bad input data. The message names the file or split and the sentence."""


def fail_line(message: str) -> None:
    """Stop with `message` on one line, however long (wasabi's msg wraps at 80 characters)."""
    print(f"✘ {message}", flush=True)
    raise SystemExit(1)


@dataclass
class Sentences:
    """One split: a sentence a row, tokens and tags as Arrow list<string> arrays.

    `where` names the source for error messages ("data/train.jsonl", "split 'dev' of ...").
    `lines`, when known, holds the 1-based line on which each sentence starts; `languages`,
    when known, each sentence's language (MultiNERD's lang).
    """

    tokens: pyarrow.ListArray
    tags: pyarrow.ListArray
    where: str
    lines: Optional[numpy.ndarray] = None
    line_label: str = "line"
    languages: Optional[pyarrow.Array] = None

    def __len__(self) -> int:
        return len(self.tokens)

    def locate(self, index: int) -> str:
        """'<where>, sentence N (line L)' for the 0-based sentence index."""
        line = f" ({self.line_label} {int(self.lines[index])})" if self.lines is not None else ""
        return f"{self.where}, sentence {index + 1}{line}"

    @classmethod
    def from_lists(cls, tokens, tags, where: str, lines=None) -> "Sentences":
        str_list = pyarrow.list_(pyarrow.string())
        return cls(
            pyarrow.array(tokens, type=str_list), pyarrow.array(tags, type=str_list), where, lines
        )

    def __post_init__(self):
        self.tokens = as_list_array(self.tokens)
        self.tags = as_list_array(self.tags)


def as_list_array(column) -> pyarrow.ListArray:
    """One contiguous list<string> array from an Arrow array or chunked column."""
    if isinstance(column, pyarrow.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pyarrow.array([], column.type)
    if pyarrow.types.is_large_list(column.type) or not pyarrow.types.is_string(
        column.type.value_type
    ):
        column = column.cast(pyarrow.list_(pyarrow.string()))
    return column


def list_offsets(array: pyarrow.ListArray) -> numpy.ndarray:
    """Offsets of a list array as int64, starting at 0 (sliced arrays included)."""
    offsets = array.offsets.to_numpy().astype(numpy.int64)
    return offsets - offsets[0]


def sentence_of(offsets: numpy.ndarray, position: int) -> int:
    """The sentence that holds the flat token position."""
    return int(numpy.searchsorted(offsets, position, side="right")) - 1


def check_sentences(sents: Sentences, types: Optional[Sequence[str]]) -> None:
    """Raise DataError for an empty split, a sentence without tokens, a token/tag count
    mismatch, a missing token or tag, or a tag that is not O, B-<type> or I-<type> (with
    <type> one of `types` when given)."""
    if len(sents) == 0:
        raise DataError(f"{sents.where}: the split is empty (no sentences).")
    tok_off, tag_off = list_offsets(sents.tokens), list_offsets(sents.tags)
    n_tok, n_tag = numpy.diff(tok_off), numpy.diff(tag_off)
    if sents.tokens.null_count or sents.tags.null_count:
        bad = numpy.flatnonzero(
            sents.tokens.is_null().to_numpy(zero_copy_only=False)
            | sents.tags.is_null().to_numpy(zero_copy_only=False)
        )[0]
        raise DataError(f"{sents.locate(bad)}: no tokens or no tags (null).")
    mismatch = numpy.flatnonzero(n_tok != n_tag)
    if len(mismatch):
        i = mismatch[0]
        raise DataError(
            f"{sents.locate(i)}: {n_tok[i]} tokens but {n_tag[i]} tags; every token needs one tag."
        )
    empty = numpy.flatnonzero(n_tok == 0)
    if len(empty):
        raise DataError(f"{sents.locate(empty[0])}: the sentence has no tokens.")
    flat_tokens, flat_tags = sents.tokens.flatten(), sents.tags.flatten()
    for flat, what in ((flat_tokens, "token"), (flat_tags, "tag")):
        if flat.null_count:
            pos = int(numpy.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
            i = sentence_of(tok_off, pos)
            raise DataError(f"{sents.locate(i)}: {what} {pos - tok_off[i] + 1} is missing (null).")
    empty_tokens = numpy.flatnonzero(pc.equal(flat_tokens, "").to_numpy(zero_copy_only=False))
    if len(empty_tokens):
        pos = int(empty_tokens[0])
        i = sentence_of(tok_off, pos)
        raise DataError(
            f"{sents.locate(i)}: token {pos - tok_off[i] + 1} is an empty string; every token "
            "needs at least one character."
        )
    for tag in pc.unique(flat_tags).to_pylist():
        problem = tag_problem(tag, types)
        if problem:
            pos = pc.index(flat_tags, tag).as_py()
            i = sentence_of(tok_off, pos)
            token = flat_tokens[pos].as_py()
            raise DataError(
                f"{sents.locate(i)}: tag {tag!r} of token {pos - tok_off[i] + 1} ({token!r}) "
                f"{problem}."
            )


def tag_problem(tag: str, types: Optional[Sequence[str]]) -> Optional[str]:
    if tag == "O":
        return None
    match = TAG_RE.match(tag)
    if not match:
        return "is not O, B-<type> or I-<type>"
    if types is not None and match.group(2) not in types:
        return f"has an unknown entity type (known: {', '.join(types)})"
    return None


def ids_to_tags(tag_ids, id_map: Sequence[str], locate: Callable[[int], str]):
    """Map a list<int> array of tag ids to a list<string> array through `id_map`, with a
    clear error for an id out of range. `locate(i)` names sentence i in messages."""
    offsets = list_offsets(tag_ids)
    flat = tag_ids.flatten()
    if not pyarrow.types.is_integer(flat.type):
        raise DataError(f"{locate(0)}: ner_tags must be integer tag ids (found {flat.type}).")
    if tag_ids.null_count:
        i = int(numpy.flatnonzero(tag_ids.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{locate(i)}: ner_tags is missing (null).")
    if flat.null_count:
        pos = int(numpy.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
        i = sentence_of(offsets, pos)
        raise DataError(
            f"{locate(i)}: the tag id of token {pos - offsets[i] + 1} is missing (null)."
        )
    ids = flat.to_numpy()
    bad = numpy.flatnonzero((ids < 0) | (ids >= len(id_map)))
    if len(bad):
        pos = int(bad[0])
        i = sentence_of(offsets, pos)
        raise DataError(
            f"{locate(i)}: tag id {ids[pos]} of token {pos - offsets[i] + 1} is out of range "
            f"0-{len(id_map) - 1}."
        )
    names = pyarrow.array(id_map, pyarrow.string()).take(pyarrow.array(ids))
    return pyarrow.ListArray.from_arrays(pyarrow.array(offsets, pyarrow.int32()), names)


# --- reading and writing files ---------------------------------------------------------


def open_binary(path: Path):
    """Open a file for reading bytes, through gzip when it ends in .gz."""
    return gzip.open(path, "rb") if Path(path).suffix == ".gz" else open(path, "rb")


def check_utf8(path: Path, where: Optional[str] = None) -> None:
    """Raise DataError naming the line of the first byte that is not UTF-8."""
    where = where or str(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, pending = 1, b""
    try:
        with open_binary(path) as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                data = pending + chunk
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError as err:
                        line += data.count(b"\n", 0, err.start)
                        raise DataError(
                            f"{where}, line {line}: not UTF-8 (byte 0x{data[err.start]:02x}); "
                            "save the file as UTF-8."
                        ) from None
                cut = data.rfind(b"\n") + 1
                line += data.count(b"\n", 0, cut)
                pending = data[cut:]
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(f"{where}, line {line}: the file ends inside a UTF-8 character.") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{where}: cannot read the file ({err}).") from None


def read_jsonl(path: Path) -> Sentences:
    """Read a {"tokens": [...], "tags": [...]} JSON-lines file (the assets format)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the split is empty (no sentences).")
    check_utf8(path)
    try:
        table = pa_json.read_json(
            path,
            read_options=pa_json.ReadOptions(block_size=1 << 24),
            parse_options=pa_json.ParseOptions(
                explicit_schema=JSONL_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )
    except (pyarrow.ArrowInvalid, UnicodeDecodeError) as err:
        raise diagnose_jsonl(path, ("tokens", "tags")) or DataError(f"{path}: {err}") from None
    if len(table) == 0:
        raise DataError(f"{path}: the split is empty (no sentences).")
    table = table.combine_chunks()
    tokens, tags = table.column("tokens").chunk(0), table.column("tags").chunk(0)
    lang = table.column("lang").chunk(0)
    languages = None if lang.null_count == len(lang) else lang
    return Sentences(tokens, tags, str(path), numpy.arange(1, len(table) + 1), languages=languages)


def diagnose_jsonl(path: Path, keys: Sequence[str]) -> Optional[DataError]:
    """Find the first line of a JSON-lines file that is not JSON or lacks a key."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            text = raw.decode("utf-8", errors="replace")
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                return DataError(f"{path}, line {n}: not valid JSON ({err.msg}).")
            missing = [k for k in keys if not isinstance(row, dict) or k not in row]
            if missing:
                return DataError(f"{path}, line {n}: no {', '.join(map(repr, missing))} field.")
    return None


def write_jsonl(sents: Sentences, path: Path, languages: bool = False) -> None:
    """Write sentences as {"tokens": [...], "tags": [...]} lines, with each one's "lang" if
    `languages` (call inside atomic_write)."""
    rows = zip(sents.tokens.to_pylist(), sents.tags.to_pylist())
    langs = sents.languages.to_pylist() if languages else None
    with open(path, "w", encoding="utf-8") as f:
        for i, (tokens, tags) in enumerate(rows):
            row = {"tokens": tokens, "tags": tags}
            if langs is not None:
                row["lang"] = langs[i]
            f.write(json.dumps(row, ensure_ascii=False))
            f.write("\n")


def read_columns(path: Path, sep: Optional[str], where: Optional[str] = None) -> Sentences:
    """Read a CoNLL-style file: one token a line, the token in the first column and its tag in
    the last, a blank line between sentences, `-DOCSTART-` lines skipped.

    sep="\\t" reads tab-separated files (a line without a tab is an error); sep=None splits on
    any whitespace (CoNLL-2003's 4 space-separated columns, or 2-column token/tag files).
    A tab-separated line of 3 or more fields whose first field is a number is read as
    index, token, tag."""
    path = Path(path)
    where = where or str(path)
    tokens: List[List[str]] = []
    tags: List[List[str]] = []
    starts: List[int] = []
    cur_tokens: List[str] = []
    cur_tags: List[str] = []
    check_utf8(path, where)
    try:
        with io.TextIOWrapper(open_binary(path), encoding="utf-8", newline=None) as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    if cur_tokens:
                        tokens.append(cur_tokens)
                        tags.append(cur_tags)
                        cur_tokens, cur_tags = [], []
                    continue
                if line.startswith("-DOCSTART-"):
                    continue
                fields = line.split(sep)
                if len(fields) < 2:
                    problem, expected = (
                        ("no tab", "token<TAB>tag")
                        if sep == "\t"
                        else ("fewer than 2 columns", "the token first and the tag last")
                    )
                    raise DataError(
                        f"{where}, sentence {len(tokens) + 1} (line {n}): {problem} in "
                        f"{line!r}; expected {expected}."
                    )
                if sep == "\t" and len(fields) >= 3 and fields[0].isdigit():
                    fields = fields[1:]
                if not cur_tokens:
                    starts.append(n)
                cur_tokens.append(fields[0])
                cur_tags.append(fields[-1].strip())
    except (OSError, EOFError) as err:
        raise DataError(f"{where}: cannot read the file ({err}).") from None
    if cur_tokens:
        tokens.append(cur_tokens)
        tags.append(cur_tags)
    return Sentences.from_lists(tokens, tags, where, numpy.asarray(starts, dtype=numpy.int64))


@contextmanager
def atomic_write(target: Path, folder: bool = False) -> Iterator[Path]:
    """Yield a hidden path beside `target` to write instead (`.<name>.tmp-<process id>`): a
    fresh folder with `folder`, else a file's name. On success it replaces `target` in one
    rename, on failure it is removed: a crash leaves only the hidden path, never a
    half-written `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    remove_outputs(tmp, old)  # left by a killed process of the same id
    if folder:
        tmp.mkdir()
    try:
        yield tmp
        if folder and target.exists():  # a folder cannot be renamed over another
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        remove_outputs(tmp, old)


def write_json(path: Path, data) -> None:
    """`data` as indented JSON, written whole or not at all (atomic_write)."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def remove_outputs(*paths: Path) -> None:
    """Remove earlier outputs before they are rebuilt, so that a failed run leaves nothing
    stale that a later step would take as done."""
    for path in paths:
        if Path(path).is_dir():
            shutil.rmtree(path)
        elif Path(path).exists():
            Path(path).unlink()


# --- label schemes, IOB2 and stats --------------------------------------------------------


@dataclass
class EncodedSplit:
    """A validated split as flat columns: one entry a token."""

    sents: Sentences
    offsets: numpy.ndarray  # sentence boundaries into the flat columns
    token_codes: numpy.ndarray  # index into `token_values`
    token_values: List[str]
    tag_codes: numpy.ndarray  # index into `tag_values`
    tag_values: List[str]

    @classmethod
    def encode(cls, sents: Sentences) -> "EncodedSplit":
        tok = pc.dictionary_encode(sents.tokens.flatten())
        tag = pc.dictionary_encode(sents.tags.flatten())
        return cls(
            sents,
            list_offsets(sents.tokens),
            tok.indices.to_numpy(),
            tok.dictionary.to_pylist(),
            tag.indices.to_numpy(),
            tag.dictionary.to_pylist(),
        )

    @property
    def n_tokens(self) -> int:
        return len(self.token_codes)

    def languages(self, language: str) -> numpy.ndarray:
        """Each sentence's language: its row's (a corpus of every language) or `language`."""
        if self.sents.languages is not None:
            return numpy.asarray(self.sents.languages.to_pylist(), dtype=object)
        return numpy.full(len(self.sents), language, dtype=object)

    def spaces(self, languages: numpy.ndarray) -> numpy.ndarray:
        """Whether a space follows each token in the text of its sentence: always, except in
        the sentences of an unspaced language (Chinese), where only two tokens that both
        border on a character of another script (a Latin word, a number) are kept apart, and
        the last token has none."""
        spaces = numpy.ones(self.n_tokens, dtype=bool)
        unspaced = numpy.isin(languages, UNSPACED_LANGUAGES)
        if not unspaced.any():
            return spaces
        from .architectures import CJK_CHARACTERS

        cjk = re.compile(CJK_CHARACTERS)
        starts = numpy.array([bool(cjk.match(v[0])) for v in self.token_values])[self.token_codes]
        ends = numpy.array([bool(cjk.match(v[-1])) for v in self.token_values])[self.token_codes]
        apart = ~(ends | numpy.append(starts[1:], True))
        apart[self.offsets[1:] - 1] = False  # a sentence's last token
        in_unspaced = numpy.repeat(unspaced, numpy.diff(self.offsets))
        spaces[in_unspaced] = apart[in_unspaced]
        return spaces

    def entities(self, labels: Sequence[str]) -> Tuple[numpy.ndarray, numpy.ndarray, int]:
        """IOB codes (spaCy's ENT_IOB) and label indices (-1 for O) of every token under a
        scheme that keeps `labels`; other types become O. The result is IOB2 as seqeval
        reads it: an I- tag after O or after another type starts a new entity (becomes B).
        Also returns how many I- tags were turned into B."""
        index = {label: i for i, label in enumerate(labels)}
        lut_iob = numpy.full(len(self.tag_values), IOB_O, dtype=numpy.uint64)
        lut_label = numpy.full(len(self.tag_values), -1, dtype=numpy.int64)
        for code, tag in enumerate(self.tag_values):
            match = TAG_RE.match(tag)
            if match and match.group(2) in index:
                lut_iob[code] = IOB_B if match.group(1) == "B" else IOB_I
                lut_label[code] = index[match.group(2)]
        iob = lut_iob[self.tag_codes]
        label = lut_label[self.tag_codes]
        prev = numpy.empty_like(label)
        prev[0:1] = -1
        prev[1:] = label[:-1]
        prev[self.offsets[:-1]] = -1  # a sentence start follows nothing
        starts = (iob == IOB_I) & (prev != label)
        iob[starts] = IOB_B
        return iob, label, int(starts.sum())

    def stats(self, labels: Sequence[str], iob: numpy.ndarray, label: numpy.ndarray, repaired):
        begins = label[iob == IOB_B]
        counts = numpy.bincount(begins, minlength=len(labels))
        ents_per_sentence = numpy.add.reduceat(
            (iob == IOB_B).astype(numpy.int64), self.offsets[:-1]
        )
        return {
            "sentences": len(self.sents),
            "tokens": self.n_tokens,
            "entities": {lab: int(c) for lab, c in zip(labels, counts)},
            "entities_total": int(counts.sum()),
            "sentences_without_entities": int((ents_per_sentence == 0).sum()),
            "i_tags_starting_entities": repaired,
        }

    def docbin_bytes(
        self,
        labels: Sequence[str],
        iob: numpy.ndarray,
        label: numpy.ndarray,
        sentences: Optional[numpy.ndarray] = None,
        spaces: Optional[numpy.ndarray] = None,
        languages: Optional[numpy.ndarray] = None,
    ) -> bytes:
        """The split as a spaCy DocBin (bytes of a .spacy file): one Doc a sentence, a space
        after each token (or as `spaces` says), entities as given, and with `languages` each
        doc's language in its user_data ("language"). Equivalent to adding
        `Doc(vocab, words=tokens, spaces=[True]*n, ents=iob2_tags)` to a
        `DocBin(attrs=["ORTH", "ENT_IOB", "ENT_TYPE"])` (tests/test_corpus.py checks it), but
        it fills the DocBin's columns for the whole split at once. `sentences` (indices into
        the split) writes those sentences only, in that order (a shard of a shuffled split);
        the DocBin then holds only the strings they use."""
        from spacy.attrs import ENT_IOB, ENT_TYPE, ORTH
        from spacy.strings import StringStore
        from spacy.tokens import DocBin

        lengths = numpy.diff(self.offsets)
        if sentences is None:
            positions = slice(None)
            offsets = self.offsets
            token_codes = codes = self.token_codes
            values = self.token_values
        else:
            sentences = numpy.asarray(sentences, dtype=numpy.int64)
            lengths = lengths[sentences]
            offsets = numpy.concatenate([[0], numpy.cumsum(lengths)])
            # the flat token positions of the chosen sentences, in their order
            positions = numpy.repeat(self.offsets[sentences] - offsets[:-1], lengths)
            positions += numpy.arange(offsets[-1])
            token_codes = self.token_codes[positions]
            used, codes = numpy.unique(token_codes, return_inverse=True)
            values = [self.token_values[i] for i in used]
        strings = StringStore()
        orth = numpy.fromiter((strings.add(t) for t in values), numpy.uint64, len(values))
        label_hash = numpy.array([strings.add(lab) for lab in labels] + [0], numpy.uint64)
        store = languages is not None
        db = DocBin(attrs=["ORTH", "ENT_IOB", "ENT_TYPE"], store_user_data=store)
        n_tokens, n_docs = len(token_codes), len(lengths)
        columns = numpy.empty((n_tokens, len(db.attrs)), dtype=numpy.uint64)
        columns[:, db.attrs.index(ORTH)] = orth[codes]
        columns[:, db.attrs.index(ENT_IOB)] = iob[positions]
        columns[:, db.attrs.index(ENT_TYPE)] = label_hash[label[positions]]  # -1: the 0 for O
        cuts = offsets[1:-1]
        db.tokens = numpy.split(columns, cuts)
        if spaces is None:
            db.spaces = numpy.split(numpy.ones((n_tokens, 1), dtype=bool), cuts)
        else:
            db.spaces = numpy.split(spaces[positions].reshape(-1, 1), cuts)
        db.flags = [{"has_unknown_spaces": False}] * n_docs
        db.cats = [{}] * n_docs
        db.span_groups = [EMPTY_SPAN_GROUPS] * n_docs
        if store:
            chosen = languages if sentences is None else languages[sentences]
            db.user_data = [srsly.msgpack_dumps({LANGUAGE_KEY: lang}) for lang in chosen]
        db.strings = set(values) | set(labels) | {""}
        return db.to_bytes()


EMPTY_SPAN_GROUPS = b"\x90"  # msgpack of an empty list: what Doc.spans.to_bytes() gives
LANGUAGE_KEY = "language"  # doc.user_data key of a doc's language, in corpora of many


# spaCy's NER transition system (spacy/pipeline/_parser_internals/ner.pyx): its actions, by
# the ids under which the NER component's label data keys them.
NER_MISSING, NER_BEGIN, NER_IN, NER_LAST, NER_UNIT, NER_OUT = range(6)


def ner_label_data(labels: Sequence[str], label: numpy.ndarray) -> Dict[str, Dict[str, int]]:
    """The label data of spaCy's NER component trained on a split whose tokens have the label
    indices `label` (-1 for O), as `spacy init labels` writes it to ner.json and
    `spacy.read_labels.v1` gives it back: for each entity action, each label that occurs with
    the number of its entity tokens, in the order the component sorts them (count, then
    label, descending), which fixes the order of its output classes. The same numbers the
    component counts when it initializes from the corpus itself (BiluoPushDown.get_actions)."""
    counts = numpy.bincount(label[label >= 0], minlength=len(labels))
    found = sorted(((int(n), lab) for lab, n in zip(labels, counts) if n), reverse=True)
    per_label = {lab: n for n, lab in found}
    data = {str(NER_MISSING): {}}
    for action in (NER_BEGIN, NER_IN, NER_LAST):
        data[str(action)] = dict(per_label)
    data[str(NER_UNIT)] = {**per_label, "": 1}  # "": a token kept out of every entity
    data[str(NER_OUT)] = {"": 1}
    return data


def reference_mismatch(
    reference: Reference, sentences: int, counts: Dict[str, int]
) -> Optional[str]:
    """When a split has the reference's size, the types whose entity counts differ from the
    published ones (only the types the scheme keeps), as text; else None."""
    if sentences != reference.sentences:
        return None
    diffs = [
        f"{t} {counts[t]} (official {n})"
        for t, n in reference.entities.items()
        if t in counts and counts[t] != n
    ]
    return ", ".join(diffs) or None
