"""The one definition of every label fact in this project.

Everything that needs the MultiNERD id map, the entity types of a dataset, the label schemes
(System A, System B) or the official reference counts imports them from here.
"""

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

SPLITS: Tuple[str, ...] = ("train", "dev", "test")

# The official id -> tag map of the hub dataset Babelscape/multinerd (its README, "ner_tags").
# Note: the copy at tner/multinerd orders LOC/ORG and PLANT/MYTH differently. Do not mix them.
MULTINERD_HUB_ID = "Babelscape/multinerd"
MULTINERD_TAGS: Tuple[str, ...] = (
    "O",
    "B-PER",
    "I-PER",
    "B-ORG",
    "I-ORG",
    "B-LOC",
    "I-LOC",
    "B-ANIM",
    "I-ANIM",
    "B-BIO",
    "I-BIO",
    "B-CEL",
    "I-CEL",
    "B-DIS",
    "I-DIS",
    "B-EVE",
    "I-EVE",
    "B-FOOD",
    "I-FOOD",
    "B-INST",
    "I-INST",
    "B-MEDIA",
    "I-MEDIA",
    "B-MYTH",
    "I-MYTH",
    "B-PLANT",
    "I-PLANT",
    "B-TIME",
    "I-TIME",
    "B-VEHI",
    "I-VEHI",
)
MULTINERD_TYPES: Tuple[str, ...] = tuple(tag[2:] for tag in MULTINERD_TAGS[1::2])
MULTINERD_LANGUAGES: Tuple[str, ...] = ("de", "en", "es", "fr", "it", "nl", "pl", "pt", "ru", "zh")
# The project var `language`: one of MULTINERD_LANGUAGES (an IOB corpus: any language spaCy
# has), or ALL: every MultiNERD language in one pipeline, with spaCy's multi-language class.
DEFAULT_LANGUAGE = "en"
ALL = "all"
MULTI_LANGUAGE = "xx"  # spaCy's code for a pipeline of many languages
LANGUAGE_NAMES: Dict[str, str] = {
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "it": "Italian",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "zh": "Chinese",
    ALL: "all ten MultiNERD languages",
}
# Written without spaces between tokens (MultiNERD's Chinese rows are split into characters);
# every other language separates its tokens with spaces.
UNSPACED_LANGUAGES: Tuple[str, ...] = ("zh",)
# The encoder of the var `transformer`'s value "default": an English one for English, a
# multilingual one for every other language and for ALL (docs/workflow.md says why).
DEFAULT_TRANSFORMER = "default"
DEFAULT_TRANSFORMERS: Dict[str, str] = {"en": "roberta-base"}
MULTILINGUAL_TRANSFORMER = "xlm-roberta-base"


def tokenizer_config(language: str) -> Dict[str, str]:
    """The [nlp.tokenizer] of a pipeline trained on `language` rows: spaCy's rule-based one,
    and for Chinese and for every language the same with each CJK character a token
    (multinerd.Tokenizer.v1 in scripts/architectures.py)."""
    cjk = language in UNSPACED_LANGUAGES or language == ALL
    return {"@tokenizers": "multinerd.Tokenizer.v1" if cjk else "spacy.Tokenizer.v1"}


def spacy_language(language: str) -> str:
    """spaCy's language code of a pipeline trained on `language` rows."""
    return MULTI_LANGUAGE if language == ALL else language


def languages_of(language: str) -> Tuple[str, ...]:
    """The MultiNERD languages whose rows a run on `language` keeps."""
    return MULTINERD_LANGUAGES if language == ALL else (language,)


def resolve_transformer(transformer: str, language: str) -> str:
    """The encoder the var `transformer` names for `language`: its value, or for "default"
    roberta-base (English) or xlm-roberta-base (every other language, and all)."""
    if transformer != DEFAULT_TRANSFORMER:
        return transformer
    return DEFAULT_TRANSFORMERS.get(language, MULTILINGUAL_TRANSFORMER)


def hub_files(language: str) -> Dict[str, str]:
    """The hub repository's files of `language`'s rows, by split: one JSON-lines file a split
    and language (train/train_de.jsonl, val/val_en.jsonl, ...). English's are 37.9 + 5.0 + 4.7
    MB, about 48 MB, as the hub lists them; all ten languages' add up to about 480 MB."""
    return {
        split: f"{folder}/{folder}_{language}.jsonl"
        for split, folder in (("train", "train"), ("dev", "val"), ("test", "test"))
    }


MULTINERD_HUB_FILES: Dict[str, str] = hub_files(DEFAULT_LANGUAGE)


@dataclass(frozen=True)
class Scheme:
    """A label scheme: which entity types a system keeps. Every other type becomes O."""

    name: str
    types: Optional[Tuple[str, ...]]  # None: every type of the dataset
    description: str

    def keep(self, dataset_types: Tuple[str, ...]) -> Tuple[str, ...]:
        if self.types is None:
            return tuple(dataset_types)
        return tuple(t for t in self.types if t in dataset_types)


# A third scheme is one more entry here; `convert` writes a corpus for every scheme.
SCHEMES: Dict[str, Scheme] = {
    "a": Scheme("a", None, "System A: every entity type of the dataset"),
    "b": Scheme(
        "b",
        ("PER", "ORG", "LOC", "DIS", "ANIM"),
        "System B: PER, ORG, LOC, DIS, ANIM; every other type becomes O",
    ),
}


@dataclass(frozen=True)
class Reference:
    """Published size of a split and its entity counts, checked when a split has this size."""

    sentences: int
    entities: Dict[str, int]


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    types: Optional[Tuple[str, ...]]  # None: whatever types the files contain
    # English's official sentences per split and entity counts (checked for English only)
    sizes: Dict[str, int] = field(default_factory=dict)
    references: Dict[str, Reference] = field(default_factory=dict)
    # the languages the `language` var may name (None: any language spaCy has)
    languages: Optional[Tuple[str, ...]] = None
    url: str = ""
    license: str = ""
    # what the licence means for a pipeline trained on the data (the package's README says it)
    terms: str = ""


DATASETS: Dict[str, Dataset] = {
    "multinerd": Dataset(
        "multinerd",
        f"MultiNERD ({MULTINERD_HUB_ID})",
        MULTINERD_TYPES,
        sizes={"train": 262560, "dev": 32820, "test": 32908},
        references={
            "test": Reference(
                32908,
                {
                    "PER": 10530,
                    "ORG": 6618,
                    "LOC": 24048,
                    "ANIM": 3208,
                    "BIO": 16,
                    "CEL": 82,
                    "DIS": 1518,
                    "EVE": 704,
                    "FOOD": 1132,
                    "INST": 24,
                    "MEDIA": 916,
                    "MYTH": 64,
                    "PLANT": 1788,
                    "TIME": 578,
                    "VEHI": 64,
                },
            )
        },
        languages=MULTINERD_LANGUAGES + (ALL,),
        url="https://huggingface.co/datasets/Babelscape/multinerd",
        license="CC BY-NC-SA 4.0",
        terms=(
            "A pipeline trained on MultiNERD inherits its CC BY-NC-SA 4.0 terms: non-commercial "
            "use only, with attribution, and what you share of it under the same licence."
        ),
    ),
    "conll2003": Dataset(
        "conll2003",
        "CoNLL-2003 English (4-column CoNLL files eng.train, eng.testa, eng.testb)",
        ("PER", "ORG", "LOC", "MISC"),
        sizes={"train": 14041, "dev": 3250, "test": 3453},
        references={
            "train": Reference(14041, {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600})
        },
        languages=("en",),
        url="https://www.clips.uantwerpen.be/conll2003/ner/",
        license="Reuters Corpus terms (research use only)",
        terms="A pipeline trained on CoNLL-2003 inherits the Reuters Corpus terms: research only.",
    ),
    "iob": Dataset("iob", "an IOB1/IOB2 corpus given as train/dev/test files", None),
}


# One colour a type, the same in every view (the demo's displaCy columns): System A and B show
# a shared type alike. PER, ORG, LOC and TIME take displaCy's own colours for PERSON, ORG, LOC
# and DATE; MISC is CoNLL-2003's.
ENTITY_COLORS: Dict[str, str] = {
    "PER": "#aa9cfc",
    "ORG": "#7aecec",
    "LOC": "#ff9561",
    "ANIM": "#9be38c",
    "BIO": "#c7d5e8",
    "CEL": "#ffd27f",
    "DIS": "#ff8197",
    "EVE": "#ffeb80",
    "FOOD": "#f2b880",
    "INST": "#c9c9c9",
    "MEDIA": "#e4b5ff",
    "MYTH": "#d6a4a4",
    "PLANT": "#66c2a5",
    "TIME": "#bfeeb7",
    "VEHI": "#8fb8de",
    "MISC": "#f0e6a0",
}


def data_name(dataset: str, language: str = DEFAULT_LANGUAGE) -> str:
    """Name of a dataset's rows in one language (assets/<name>/): en_multinerd, de_multinerd,
    all_multinerd, es_iob. The systems' names start with it, as spaCy's package names start
    with the language: corpus/en_multinerd_a/, training/en_multinerd_a_trf/, the package
    en_multinerd_a_trf."""
    return f"{language}_{dataset}"


def corpus_name(dataset: str, scheme: str, language: str = DEFAULT_LANGUAGE) -> str:
    """Name of the corpus/<name>/ of one system (its training/ and metrics/ names add the
    config)."""
    return f"{data_name(dataset, language)}_{scheme}"
