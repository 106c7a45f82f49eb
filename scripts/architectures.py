"""Custom layers of this project's pipelines and its training corpus reader, registered with
spaCy.

`spacy train`, `spacy evaluate` and `spacy package` get this file with `--code`, and the
packages carry it, so `spacy.load("en_...")` needs nothing from the project checkout (a
trained pipeline's config names the reader too, so it is registered wherever the layers are).
"""

import random
import re
import warnings
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Union

import numpy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Corpus
from spacy.training.corpus import walk_corpus
from spacy.util import registry
from spacy_transformers import Transformer
from thinc.api import Model, concatenate, get_current_ops
from thinc.types import Floats2d
from wasabi import msg


@registry.readers("multinerd.StreamedCorpus.v1")
def streamed_corpus(
    path: Optional[Union[str, Path]],
    shuffle: bool = False,
    buffer: int = 10_000,
    seed: int = 0,
    limit: int = 0,
    sample: int = 0,
    gold_preproc: bool = False,
    max_length: int = 0,
    augmenter: Optional[Callable] = None,
) -> "StreamedCorpus":
    """spacy.Corpus.v1 for a corpus too large to hold in memory: a .spacy file or a directory
    of them (shards), read one file at a time. With `shuffle`, every pass over it (each epoch
    of `spacy train` with max_epochs = -1) takes the files in a new order and yields their
    docs through a shuffle buffer of `buffer` docs, from a random generator seeded with
    `seed`: the same seed gives the same orders, and at most `buffer` docs plus one file are
    in memory. `limit`: only the first N docs (file order), as in spacy.Corpus.v1. `sample`:
    at most N docs, spread evenly over the corpus (every k-th), for a dev evaluation whose
    memory does not grow with the dev split. `gold_preproc`, `max_length`, `augmenter`: as in
    spacy.Corpus.v1."""
    if path is None:
        raise ValueError("multinerd.StreamedCorpus.v1 needs a path: a .spacy file or directory")
    return StreamedCorpus(
        path,
        shuffle=shuffle,
        buffer=buffer,
        seed=seed,
        limit=limit,
        sample=sample,
        gold_preproc=gold_preproc,
        max_length=max_length,
        augmenter=augmenter,
    )


ANNOUNCED = set()  # corpora said once: a training run resolves its config twice


class StreamedCorpus(Corpus):
    """spaCy's Corpus (the same Examples, gold_preproc, max_length and augmenter) that reads
    its files one at a time, optionally in a new shuffled order each call; see
    streamed_corpus."""

    def __init__(
        self,
        path: Union[str, Path],
        *,
        shuffle: bool = False,
        buffer: int = 10_000,
        seed: int = 0,
        limit: int = 0,
        sample: int = 0,
        gold_preproc: bool = False,
        max_length: int = 0,
        augmenter: Optional[Callable] = None,
    ):
        super().__init__(
            path, limit=limit, gold_preproc=gold_preproc, max_length=max_length, augmenter=augmenter
        )
        if not Path(path).exists():
            raise ValueError(f"multinerd.StreamedCorpus.v1: {path} does not exist.")
        with warnings.catch_warnings():  # spaCy's W090 for no file: the error below says it
            warnings.simplefilter("ignore", UserWarning)
            self.files = walk_corpus(path, ".spacy")
        if not self.files:
            raise ValueError(f"multinerd.StreamedCorpus.v1: no .spacy file in {path}.")
        if shuffle and buffer < 1:
            raise ValueError(f"multinerd.StreamedCorpus.v1: buffer must be at least 1 ({buffer}).")
        self.shuffle, self.buffer, self.sample = shuffle, buffer, sample
        self.rng = random.Random(seed)
        self.total: Optional[int] = None  # docs in all files, counted when `sample` needs it

        if shuffle and (str(path), buffer, seed) not in ANNOUNCED:
            ANNOUNCED.add((str(path), buffer, seed))
            msg.info(
                f"Streaming {self.path} ({len(self.files)} file(s)): a new order each pass, "
                f"through a shuffle buffer of {buffer:,} docs (seed {seed})"
            )

    def __call__(self, nlp) -> Iterator:
        docs = self.docs(nlp.vocab)
        if self.gold_preproc:
            examples = self.make_examples_gold_preproc(nlp, docs)
        else:
            examples = self.make_examples(nlp, docs)
        for example in examples:
            yield from self.augmenter(nlp, example)

    def read_files(self, vocab, files: List[Path]) -> Iterator[Doc]:
        for path in files:
            for doc in read_docbin(path).get_docs(vocab):
                if len(doc):
                    yield doc

    def docs(self, vocab) -> Iterator[Doc]:
        """The reference docs of one pass."""
        if self.limit > 0 or self.sample > 0:
            docs = self.chosen(vocab)
            if not self.shuffle:
                yield from docs
                return
            docs = list(docs)  # at most `limit` or `sample` docs
            self.rng.shuffle(docs)
            yield from docs
            return
        if not self.shuffle:
            yield from self.read_files(vocab, self.files)
            return
        files = list(self.files)
        self.rng.shuffle(files)
        yield from shuffle_buffer(self.read_files(vocab, files), self.buffer, self.rng)

    def chosen(self, vocab) -> Iterable[Doc]:
        """The first `limit` docs in file order, or `sample` docs spread evenly over them."""
        docs = self.read_files(vocab, self.files)
        if self.limit > 0:
            return islice(docs, self.limit)
        if self.total is None:  # empty docs included: an upper bound of what is read
            self.total = sum(len(read_docbin(path)) for path in self.files)
        if self.sample >= self.total:
            return docs
        keep = {self.total * i // self.sample for i in range(self.sample)}
        return (doc for i, doc in enumerate(docs) if i in keep)


def read_docbin(path: Path) -> DocBin:
    try:
        return DocBin().from_disk(path)
    except Exception as err:
        raise ValueError(f"{path}: not a spaCy DocBin (.spacy) file ({err}).") from None


def shuffle_buffer(items: Iterable, size: int, rng: random.Random) -> Iterator:
    """The items in a random order, at most `size` of them held at a time: the first `size`
    fill the buffer, then each next one takes the place of a random one, which is yielded;
    the rest are yielded shuffled at the end."""
    held: list = []
    for item in items:
        if len(held) < size:
            held.append(item)
            continue
        i = rng.randrange(size)
        yield held[i]
        held[i] = item
    rng.shuffle(held)
    yield from held


# CuPy 14 deprecates ndarray.toDlpack() (cupy PR 8831) with this warning, and thinc 8.3's
# xp2torch still calls it on every transfer from CuPy to torch: each training and prediction
# step of a transformer on a GPU would print it. Harmless (thinc's to fix, not ours), so it is
# silenced, exactly this one, wherever this file is loaded: `spacy train`/`evaluate --code`,
# annotate and its workers, gpu-smoke, and the packaged pipelines.
CUPY_TODLPACK_WARNING = (
    "This function is deprecated and will be removed in a future release. "
    "Use the cupy.from_dlpack() array constructor instead."
)
warnings.filterwarnings(
    "ignore",
    message=re.escape(CUPY_TODLPACK_WARNING),
    category=numpy.exceptions.VisibleDeprecationWarning,  # what cupy.VisibleDeprecationWarning is
)


# The characters of the Chinese, Japanese and Korean scripts and their punctuation (CJK
# ideographs, their extensions and compatibility forms, kana, full-width forms): MultiNERD's
# Chinese rows have one such character a token.
CJK_CHARACTERS = (
    r"[\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    r"\uff00-\uffef]"
)


@registry.tokenizers("multinerd.Tokenizer.v1")
def cjk_tokenizer() -> Callable:
    """spaCy's rule-based tokenizer (spacy.Tokenizer.v1, with the language's rules) that also
    makes every CJK character a token of its own, as MultiNERD's Chinese rows are split: the
    tokenizer of the Chinese pipelines and of the one for every language (xx), whose rules
    would leave a Chinese sentence one token. A Latin word or a number stays whole."""
    from spacy.util import compile_infix_regex, compile_prefix_regex

    create = registry.tokenizers.get("spacy.Tokenizer.v1")()

    def make(nlp):
        tokenizer = create(nlp)
        # an infix splits only inside a string: a character that opens one is a prefix
        prefixes = [CJK_CHARACTERS] + list(nlp.Defaults.prefixes or [])
        tokenizer.prefix_search = compile_prefix_regex(prefixes).search
        infixes = list(nlp.Defaults.infixes or []) + [CJK_CHARACTERS]
        tokenizer.infix_finditer = compile_infix_regex(infixes).finditer
        return tokenizer

    return make


@registry.architectures("multinerd.TransformerWithFeatures.v1")
def transformer_with_features(
    transformer: Model[List[Doc], List[Floats2d]],
    features: Model[List[Doc], List[Floats2d]],
) -> Model[List[Doc], List[Floats2d]]:
    """Token vectors of a transformer (a TransformerListener) concatenated with `features`,
    e.g. hash embeddings (spacy.MultiHashEmbed.v2) of what an uncased or subword encoder
    blurs: the token's case and shape, its prefix and suffix."""
    model = concatenate(transformer, features)
    model.name = "transformer_with_features"
    return model


@registry.architectures("multinerd.TransformerModel.v2")
def transformer_model(
    name: str,
    get_spans: Callable,
    tokenizer_config: Optional[dict] = None,
    transformer_config: Optional[dict] = None,
    mixed_precision: bool = False,
    grad_scaler_config: Optional[dict] = None,
    cpu_batch_pieces: Optional[int] = None,
    cpu_bfloat16: Optional[bool] = None,
) -> Model:
    """spacy-transformers.TransformerModel.v3 (same settings, weights, training and results)
    whose encoder loads with the config it was trained with, exactly, and which runs fp16
    mixed precision only on a GPU. `cpu_batch_pieces` and `cpu_bfloat16` are accepted and
    ignored, so that the configs of pipelines saved with them keep loading: the CPU's
    sub-batches and bfloat16 are the component's settings now (multinerd_transformer)."""
    create = registry.architectures.get(SPACY_TRANSFORMER_MODEL)
    # fp16 autocast and loss scaling exist on a GPU only: on a CPU, torch would switch autocast
    # off with a warning at every prediction. So a pipeline trained with mixed precision runs
    # in fp32 where it is created on the CPU, quietly, and in fp16 where it is created on a
    # GPU (`spacy.require_gpu()` or `--gpu-id` before the pipeline is loaded or trained).
    on_gpu = get_current_ops().device_type == "gpu"
    model = create(
        name,
        get_spans,
        tokenizer_config or {},
        transformer_config or {},
        mixed_precision and on_gpu,
        grad_scaler_config or {},
    )
    keep_config_exact(model)
    return model


@registry.architectures("multinerd.TransformerModel.v1")
def transformer_model_v1(
    name: str,
    get_spans: Callable,
    tokenizer_config: Optional[dict] = None,
    transformer_config: Optional[dict] = None,
    mixed_precision: bool = False,
    grad_scaler_config: Optional[dict] = None,
    cpu_batch_pieces: Optional[int] = None,
    nested_tensors: Optional[bool] = None,
) -> Model:
    """The first version, kept so that pipelines whose config names it keep loading: v2.
    `cpu_batch_pieces` and `nested_tensors` are accepted and ignored."""
    return transformer_model(
        name, get_spans, tokenizer_config, transformer_config, mixed_precision, grad_scaler_config
    )


SPACY_TRANSFORMER_MODEL = "spacy-transformers.TransformerModel.v3"
CPU_FACTORY = "multinerd_transformer"
TRANSFORMER_DEFAULTS = Language.get_factory_meta("transformer").default_config


class CPUSettingsTransformer(Transformer):
    """spacy-transformers' Transformer component which, on a CPU, predicts in sub-batches of
    texts of similar length in word pieces, at most `cpu_max_batch_pieces` padded word pieces
    each (the model's own tokenizer counts them), and with `cpu_bfloat16` runs the encoder
    under torch's bfloat16 autocast. Its `max_batch_items` (padded spaCy tokens) suits a GPU; on
    a CPU the padding of a large sub-batch is computed in vain, and spaCy tokens are a weak
    guide to the word pieces the encoder pads to. Training, and prediction on a GPU, are the
    component's own. Both settings are in its cfg, saved with the pipeline."""

    def __init__(self, *args, cpu_max_batch_pieces: int, cpu_bfloat16: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg.update(cpu_max_batch_pieces=cpu_max_batch_pieces, cpu_bfloat16=cpu_bfloat16)

    def on_cpu(self) -> bool:
        return self.model.ops.device_type == "cpu"

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        if not self.on_cpu():
            yield from super().pipe(stream, batch_size=batch_size)
            return
        from spacy.util import minibatch
        from spacy_transformers.pipeline_component import install_extensions
        from spacy_transformers.util import batch_by_length

        install_extensions()
        for outer in minibatch(stream, batch_size):
            outer = list(outer)
            # counted only: a text over the model's length is split into windows later, so
            # the tokenizer's warning about its length does not apply
            texts = [doc.text for doc in outer]
            pieces = self.model.tokenizer(texts, verbose=False)["input_ids"]
            lengths = [range(len(p)) for p in pieces]  # what batch_by_length measures
            for indices in batch_by_length(lengths, self.cfg["cpu_max_batch_pieces"]):
                subbatch = [outer[i] for i in indices]
                self.set_annotations(subbatch, self.predict(subbatch))
            yield from outer

    def predict(self, docs: Iterable[Doc]):
        if not (self.cfg.get("cpu_bfloat16") and self.on_cpu()):
            return super().predict(docs)
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            activations = super().predict(docs)
        output = activations.model_output  # float32 for the components that read it
        for key, value in list(output.items()):
            if torch.is_tensor(value) and value.is_floating_point():
                output[key] = value.float()
        return activations


def make_cpu_settings_transformer(
    nlp: Language,
    name: str,
    model: Model,
    set_extra_annotations: Callable,
    max_batch_items: int,
    cpu_max_batch_pieces: int,
    cpu_bfloat16: bool,
) -> CPUSettingsTransformer:
    """spacy-transformers' `transformer` factory with the CPU's settings (CPUSettingsTransformer):
    sub-batches of `max_batch_items` padded tokens on a GPU, of `cpu_max_batch_pieces` padded
    word pieces on a CPU."""
    return CPUSettingsTransformer(
        nlp.vocab,
        model,
        set_extra_annotations,
        name=name,
        max_batch_items=max_batch_items,
        cpu_max_batch_pieces=cpu_max_batch_pieces,
        cpu_bfloat16=cpu_bfloat16,
    )


# registered once per process: a package carries a copy of this file, and spaCy refuses a
# second factory of the same name from another file
if not Language.has_factory(CPU_FACTORY):
    Language.factory(
        CPU_FACTORY,
        assigns=["doc._.trf_data"],
        default_config={
            **TRANSFORMER_DEFAULTS,
            "cpu_max_batch_pieces": 384,
            "cpu_bfloat16": False,
        },
    )(make_cpu_settings_transformer)


# The encoder's config, exactly. spacy-transformers saves the encoder's Hugging Face config
# exactly (msgpack, in the pipeline's transformer/model file), but its shim's from_bytes, which
# every load goes through (spacy.load of a folder or a package, nlp.from_bytes), writes it to a
# temporary config.json with srsly's JSON writer, which keeps 9 decimals: a layer_norm_eps of
# 1e-12 (BERT's, ELECTRA's) comes back as 0.0. So the shim's from_bytes is wrapped: after
# spacy-transformers' own load, the config is read back from the same bytes, and where the
# loaded one differs, the encoder is rebuilt from it with the loaded weights. Checked when the
# model is built and when it loads: with another layout, or a config that cannot be rebuilt,
# the encoder stays as spacy-transformers loaded it, with one warning.
SHIM_ATTRIBUTES = ("_hfmodel", "_model", "model_cls", "from_bytes")


def keep_config_exact(model: Model) -> None:
    """Make the model's encoder load with the config it was saved with, every key exactly."""
    shims = model.layers[0].shims if model.layers else []
    if len(shims) != 1 or not all(hasattr(shims[0], name) for name in SHIM_ATTRIBUTES):
        warn_config_rounded("its encoder layer does not hold one Hugging Face shim")
        return
    shim = shims[0]
    shim.from_bytes = partial(load_exact_config, shim, type(shim).from_bytes)


def load_exact_config(shim, library_from_bytes: Callable, data: bytes):
    """The shim's from_bytes: spacy-transformers' own, then the encoder's config as saved."""
    import srsly

    library_from_bytes(shim, data)
    msg = srsly.msgpack_loads(data)
    saved = msg.get("config") if isinstance(msg, dict) else None
    encoder = getattr(shim._hfmodel, "transformer", None)
    if not isinstance(saved, dict) or (saved and not hasattr(encoder, "config")):
        warn_config_rounded("its saved encoder has no config where expected")
    elif saved:
        try:
            restore_config(shim, encoder, saved)
        except Exception as err:  # spacy-transformers' load stands
            warn_config_rounded(f"{type(err).__name__}: {err}")
    return shim


def restore_config(shim, encoder, saved: dict) -> None:
    """Give the shim's loaded `encoder` the `saved` config: its name in place, and for any
    other difference a new encoder built from that config, with the loaded weights."""
    if "_name_or_path" in saved:  # spacy-transformers' temporary folder otherwise
        encoder.config.name_or_path = saved["_name_or_path"]
    loaded = encoder.config.to_dict()
    if all(key in loaded and loaded[key] == value for key, value in saved.items()):
        return
    rebuilt = shim.model_cls.from_config(type(encoder.config).from_dict(saved))
    rebuilt.load_state_dict(encoder.state_dict())
    rebuilt.to(encoder.device).train(encoder.training)
    shim._hfmodel.transformer = shim._model = rebuilt


def warn_config_rounded(why: str) -> None:
    from importlib.metadata import version

    warnings.warn(
        "multinerd.TransformerModel.v2: the encoder's config cannot be kept exact with "
        f"spacy-transformers {version('spacy-transformers')} ({why}): it loads as "
        "spacy-transformers loads it, with floats rounded to 9 decimals (docs/inference.md).",
        ConfigWarning,
        stacklevel=3,
    )


class ConfigWarning(UserWarning):
    """The encoder's config may load with rounded floats: spacy-transformers' layout, or the
    config, is not what keep_config_exact knows."""
