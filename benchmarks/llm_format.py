"""What bench-llm writes for the language model and reads back from it, with no model: the
instruction rows of the recipe (benchmarks/llm_recipe.cfg), the reading of a generation
into one tag a token of the sentence, and the scores of those tags by the scorer that
`spacy evaluate` uses for NER, over the gold tokens.

A row is the prompt, the answer and the end marker:

    <s>[INST] Each included ginseng . [/INST] ginseng:B-PLANT </s>

The answer names each token that has an entity tag, with its tag, in the sentence's order.
Reading it back puts each `token:TAG` on that token, in the same order (read_generation).
What an LLM may write instead counts against it and is counted, never stops the run: a pair
without a colon (malformed), a tag that is not B- or I- of a type of the scheme (unknown
tag), a token that does not occur further on in the sentence (not in the sentence).
"""

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from scripts.corpus import IOB_B, IOB_O, TAG_RE, EncodedSplit, Sentences

MALFORMED, UNKNOWN_TAG, NOT_IN_SENTENCE = "malformed pair", "unknown tag", "not in the sentence"
PROBLEMS = (MALFORMED, UNKNOWN_TAG, NOT_IN_SENTENCE)


@dataclass(frozen=True)
class Prompt:
    """The row format: `prompt` with {sentence}, the answer's `separator`, the `end` marker."""

    prompt: str
    separator: str
    end: str

    def text(self, tokens: Sequence[str]) -> str:
        """What the model is given for a sentence: the row up to its answer."""
        return self.prompt.format(sentence=" ".join(tokens))

    def answer(self, tokens: Sequence[str], tags: Sequence[str]) -> str:
        return self.separator.join(f"{tok}:{tag}" for tok, tag in zip(tokens, tags) if tag != "O")

    def row(self, tokens: Sequence[str], tags: Sequence[str]) -> str:
        """A training row: prompt, answer (nothing for a sentence without entities), end."""
        answer = self.answer(tokens, tags)
        return " ".join(part for part in (self.text(tokens), answer, self.end) if part)

    def markers(self) -> List[str]:
        """The markup of the prompt and the end: <s>, [INST], [/INST], </s>."""
        return re.findall(r"<[^<>\s]+>|\[[^\[\]\s]+\]", self.prompt + " " + self.end)


def scheme_tags(enc: EncodedSplit, labels: Sequence[str]) -> List[List[str]]:
    """The split's tags under a scheme that keeps `labels`: other types O, and an I- after O
    or after another type a B-, as the corpus step writes them (EncodedSplit.entities)."""
    iob, label, _ = enc.entities(labels)
    flat = [
        "O" if i == IOB_O else f"{'B' if i == IOB_B else 'I'}-{labels[j]}"
        for i, j in zip(iob.tolist(), label.tolist())
    ]
    return [flat[a:b] for a, b in zip(enc.offsets[:-1], enc.offsets[1:])]


@dataclass
class Reading:
    """A generation read into one tag a token, and what in it could not be read."""

    tags: List[str]
    problems: List[Tuple[str, str]] = field(default_factory=list)  # (kind, the text)
    pairs: int = 0  # token:TAG pairs put on a token


def pairs_of(
    text: str, labels: Sequence[str], reading: Reading, separator: str = ", "
) -> List[Tuple[str, str, str]]:
    """(token, tag, text) of each pair of the generation whose tag is one of the scheme's;
    the others go to `reading.problems`. The pairs are split at white space, and the
    separator (its part that is not white space, the comma of ", ") where it ends a pair or
    stands alone is dropped: a tag never holds one. The token is what comes before the
    pair's last colon, so a token that holds one reads right ("12:30:B-TIME")."""
    known, pairs, mark = set(labels), [], separator.strip()
    for chunk in text.split():
        pair = chunk[: -len(mark)] if mark and chunk.endswith(mark) else chunk
        if not pair:  # the separator alone
            continue
        token, colon, tag = pair.rpartition(":")
        match = TAG_RE.match(tag)
        if not colon or not token:
            reading.problems.append((MALFORMED, chunk))
        elif not match or match.group(2) not in known:
            reading.problems.append((UNKNOWN_TAG, chunk))
        else:
            pairs.append((token, tag, chunk))
    return pairs


def find_run(tokens: Sequence[str], words: Sequence[str], start: int) -> int:
    """The first position at or after `start` where `words` follow each other; -1 if none."""
    for i in range(start, len(tokens) - len(words) + 1):
        if list(tokens[i : i + len(words)]) == list(words):
            return i
    return -1


def read_generation(
    text: str, tokens: Sequence[str], labels: Sequence[str], separator: str = ", "
) -> Reading:
    """The tags that a generation gives the sentence's tokens (O where it names none).

    An entity's pairs (a pair, and the I- pairs of its type after it) go on the first run of
    those tokens at or after the previous entity, so "Paris:B-PER, Hilton:I-PER" finds
    Paris Hilton after an earlier Paris; where the sentence has no such run, each pair goes
    on the first such token on its own. A one-token entity whose token occurs twice goes on
    the first: the format cannot tell them apart (bench-llm scores the gold answers read
    back, the ceiling this puts on any model)."""
    reading = Reading(["O"] * len(tokens))
    entities: List[List[Tuple[str, str, str]]] = []
    for token, tag, chunk in pairs_of(text, labels, reading, separator):
        inside = entities and tag[:2] == "I-" and entities[-1][-1][1][2:] == tag[2:]
        if inside:
            entities[-1].append((token, tag, chunk))
        else:
            entities.append([(token, tag, chunk)])
    position = 0
    for entity in entities:
        start = find_run(tokens, [token for token, _, _ in entity], position)
        places = range(start, start + len(entity)) if start >= 0 else [None] * len(entity)
        for (token, tag, chunk), place in zip(entity, places):
            if place is None:
                place = tokens.index(token, position) if token in tokens[position:] else -1
            if place < 0:
                reading.problems.append((NOT_IN_SENTENCE, chunk))
                continue
            reading.tags[place] = tag
            reading.pairs += 1
            position = place + 1
    return reading


def unreadable(readings: Sequence[Reading], generations: Sequence[str]) -> Dict:
    """How much of the generations could not be read: the generations with a problem, those
    of which nothing could be read, and the problems by kind."""
    partly = sum(bool(r.problems) for r in readings)
    wholly = sum(bool(r.problems) and not r.pairs for r in readings)
    kinds = Counter(kind for r in readings for kind, _ in r.problems)
    n = len(readings)
    return {
        "generations": n,
        "with_problems": partly,
        "share": partly / n if n else 0.0,
        "nothing_readable": wholly,
        "empty": sum(not g.strip() for g in generations),
        "problems": {kind: kinds.get(kind, 0) for kind in PROBLEMS},
    }


def docs(tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[str]], labels, vocab):
    """spaCy Docs of the sentences with the entities of `tags`, made as the corpus step makes
    the gold docs (EncodedSplit: the same repair of an I- that starts an entity)."""
    from spacy.tokens import DocBin

    enc = EncodedSplit.encode(Sentences.from_lists(tokens, tags, "generations"))
    data = enc.docbin_bytes(labels, *enc.entities(labels)[:2])
    return list(DocBin().from_bytes(data).get_docs(vocab))


def score(tokens, gold_tags, pred_tags, labels) -> Dict:
    """Entity P/R/F1, overall and per type, under the keys `spacy evaluate` writes (ents_p,
    ents_r, ents_f, ents_per_type), by spaCy's NER scorer on the gold tokens."""
    import spacy
    from spacy.scorer import get_ner_prf
    from spacy.training import Example

    vocab = spacy.blank("en").vocab
    gold = docs(tokens, gold_tags, labels, vocab)
    pred = docs(tokens, pred_tags, labels, vocab)
    return get_ner_prf([Example(p, g) for p, g in zip(pred, gold)])


def load_recipe(path: Path, overrides: Optional[Dict] = None):
    """The recipe config (benchmarks/llm_recipe.cfg) with `overrides` ({"lora.r": 8})."""
    from spacy.util import load_config

    return load_config(path, overrides=overrides or {})


def prompt_of(recipe) -> Prompt:
    return Prompt(**recipe["prompt"])
