"""Custom layers of this project's pipelines and its training corpus reader, registered with
spaCy.

`spacy train`, `spacy evaluate` and `spacy package` get this file with `--code`, and the
packages carry it, so `spacy.load("en_...")` needs nothing from the project checkout (a
trained pipeline's config names the reader too, so it is registered wherever the layers are).
"""

import random
import re
import warnings
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Union

import numpy
from spacy.tokens import Doc, DocBin
from spacy.training import Corpus
from spacy.training.corpus import walk_corpus
from spacy.util import registry
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
        self.sizes: Optional[List[int]] = None  # docs a file, counted when `sample` needs it

        if shuffle:
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
        if self.sizes is None:
            self.sizes = [len(read_docbin(path)) for path in self.files]
        total = sum(self.sizes)  # empty docs included: an upper bound of what is read
        if self.sample >= total:
            return docs
        keep = {total * i // self.sample for i in range(self.sample)}
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


@registry.architectures("multinerd.TransformerWithFeatures.v1")
def transformer_with_features(
    transformer: Model[List[Doc], List[Floats2d]],
    features: Model[List[Doc], List[Floats2d]],
) -> Model[List[Doc], List[Floats2d]]:
    """Token vectors of a transformer (a TransformerListener) concatenated with those of a
    small hash-embedding tok2vec. The tok2vec sees what an uncased or subword encoder
    blurs: the token's case and shape, its prefix and suffix."""
    model = concatenate(transformer, features)
    model.name = "transformer_with_features"
    return model


@registry.architectures("multinerd.TransformerModel.v1")
def transformer_model(
    name: str,
    get_spans: Callable,
    tokenizer_config: Optional[dict] = None,
    transformer_config: Optional[dict] = None,
    mixed_precision: bool = False,
    grad_scaler_config: Optional[dict] = None,
    cpu_batch_pieces: int = 384,
    nested_tensors: bool = True,
) -> Model:
    """spacy-transformers.TransformerModel.v3 (same settings, weights and training) that
    predicts faster on a CPU, with the same results. When it predicts with the encoder on the
    CPU, it sorts the batch's texts by their number of word pieces and runs the encoder on
    groups of at most `cpu_batch_pieces` padded word pieces (the component's sub-batches are
    sized by spaCy tokens, a weaker guide to the padding), and with `nested_tensors` it runs
    the encoder's layers in torch's nested-tensor fast path, which computes no padded
    position at all (BERT and RoBERTa style encoders; others keep the plain path). Training,
    and prediction on a GPU, take spacy-transformers' own path unchanged. The nested copy of
    the layers holds a second copy of their weights in memory; it is rebuilt after each
    training update. benchmarks/RESULTS.md has the figures."""
    from spacy_transformers.architectures import create_TransformerModel_v3

    # fp16 autocast and loss scaling exist on a GPU only: on a CPU, torch would switch autocast
    # off with a warning at every prediction. So a pipeline trained with mixed precision runs
    # in fp32 where it is created on the CPU, quietly, and in fp16 where it is created on a
    # GPU (`spacy.require_gpu()` or `--gpu-id` before the pipeline is loaded or trained).
    on_gpu = get_current_ops().device_type == "gpu"
    model = create_TransformerModel_v3(
        name,
        get_spans,
        tokenizer_config or {},
        transformer_config or {},
        mixed_precision and on_gpu,
        grad_scaler_config or {},
    )
    plain_forward = model._func
    model.attrs["cpu_batch_pieces"] = cpu_batch_pieces
    model.attrs["nested_tensors"] = nested_tensors
    state = {}  # the CPU predictor, built on first use for the encoder it was built from

    def forward(model, docs, is_train):
        shims = model.layers[0].shims if model.layers else []
        if is_train or not shims:
            state.clear()  # the weights are about to change
            return plain_forward(model, docs, is_train)
        shim = shims[0]
        encoder = shim._model
        predictor = state.get("predictor")
        if predictor is None or not predictor.serves(encoder, model.attrs):
            predictor = state["predictor"] = CPUPredictor(
                encoder, model.attrs["cpu_batch_pieces"], model.attrs["nested_tensors"]
            )
        if not predictor.on_cpu:
            return plain_forward(model, docs, is_train)
        shim._model = predictor  # what thinc's PyTorchShim.predict calls
        try:
            return plain_forward(model, docs, is_train)
        finally:
            shim._model = encoder

    forward.state = state  # for tests and profiling
    model.replace_callbacks(forward, init=model.init)
    return model


class CPUPredictor:
    """Stands in for a Hugging Face encoder while spacy-transformers predicts: takes its
    inputs and returns its last hidden states (and pooler output), computed on groups of
    texts of similar length, each cut to its longest text, optionally through torch's
    nested-tensor fast path. Padded positions of the output are zeros (spacy-transformers
    reads only the real ones). thinc's eval()/train() calls around each prediction are no-ops
    here: the encoder is put in eval mode once."""

    def __init__(self, encoder, max_pieces: int, nested: bool):
        self.encoder = encoder
        self.max_pieces = max_pieces
        self.nested = nested
        self.device = next(encoder.parameters()).device
        self.on_cpu = self.device.type == "cpu"
        config = encoder.config
        self.plain = bool(
            config.output_hidden_states or config.output_attentions or config.is_decoder
        )
        self.layers = None
        if nested and self.on_cpu and not self.plain:
            # torch calls its nested-tensor API a prototype and says so on each first use
            warnings.filterwarnings(
                "ignore", message="The PyTorch API of nested tensors is in prototype stage"
            )
            try:
                self.layers = nested_encoder(encoder)
                self._check()
            except (AttributeError, ValueError, TypeError, RuntimeError) as err:
                warnings.warn(
                    "multinerd.TransformerModel.v1: no nested-tensor path for this encoder "
                    f"({err})",
                    stacklevel=2,
                )
                self.layers = None

    def serves(self, encoder, attrs) -> bool:
        return (
            encoder is self.encoder
            and next(encoder.parameters()).device == self.device
            and (attrs["cpu_batch_pieces"], attrs["nested_tensors"])
            == (self.max_pieces, self.nested)
        )

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def _check(self):
        import torch

        vocab = self.encoder.config.vocab_size
        ids = torch.randint(5, vocab, (2, 6), generator=torch.Generator().manual_seed(0))
        mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
        with torch.no_grad():
            was_training = self.encoder.training
            self.encoder.eval()
            expected = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            got = nested_forward(self.encoder, self.layers, ids, mask)
            self.encoder.train(was_training)
        if not torch.allclose(got[mask.bool()], expected[mask.bool()], atol=1e-4):
            raise ValueError("its nested copy does not compute what the encoder computes")

    def __call__(self, input_ids, attention_mask, token_type_ids=None, **kwargs):
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        if self.encoder.training:
            self.encoder.eval()  # no dropout; thinc puts it back in train mode before an update
        if self.plain or kwargs:
            return self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                **kwargs,
            )
        lengths = [int(n) for n in attention_mask.sum(1).tolist()]
        out: Optional[torch.Tensor] = None
        for group in length_groups(lengths, self.max_pieces):
            longest = max(lengths[i] for i in group)
            rows = torch.tensor(group, device=input_ids.device)
            ids, mask = input_ids[rows, :longest], attention_mask[rows, :longest]
            types = token_type_ids[rows, :longest] if token_type_ids is not None else None
            if self.layers is not None:
                hidden = nested_forward(self.encoder, self.layers, ids, mask, types)
            else:
                hidden = self.encoder(
                    input_ids=ids, attention_mask=mask, token_type_ids=types
                ).last_hidden_state
            if out is None:
                out = hidden.new_zeros(input_ids.shape + (hidden.shape[-1],))
            out[rows, :longest] = hidden
        pooler = getattr(self.encoder, "pooler", None)
        return BaseModelOutputWithPooling(
            last_hidden_state=out, pooler_output=pooler(out) if pooler is not None else None
        )


def length_groups(lengths: List[int], max_pieces: int) -> List[List[int]]:
    """Indices of the texts sorted by length, cut into groups whose size padded to their
    longest text is at most max_pieces (a longer text is a group of its own):
    spacy-transformers' batch_by_length, given word-piece counts instead of docs."""
    from spacy_transformers.util import batch_by_length

    return batch_by_length([range(n) for n in lengths], max_pieces)


def nested_forward(encoder, layers, input_ids, attention_mask, token_type_ids=None):
    """The encoder's last hidden states computed by `nested_encoder`'s copy of its layers
    (`layers`) after its own embeddings; padded positions are zeros."""
    embedded = encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    return layers(embedded, src_key_padding_mask=~attention_mask.bool())


def nested_encoder(encoder):
    """The layers of a transformers BERT or RoBERTa encoder (post-norm, exact GELU, absolute
    positions) as a torch.nn.TransformerEncoder with copies of the same weights, for torch's
    fast path: in eval mode without gradients and given a padding mask, it packs the batch
    into a nested tensor and computes no padded position."""
    import torch

    cfg = encoder.config
    if (
        cfg.hidden_act != "gelu"
        or getattr(cfg, "position_embedding_type", "absolute") != "absolute"
    ):
        raise ValueError(f"needs exact GELU and absolute positions, got {cfg.hidden_act}")
    layers = []
    for hf in encoder.encoder.layer:
        layer = torch.nn.TransformerEncoderLayer(
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.intermediate_size,
            dropout=0.0,
            activation="gelu",
            layer_norm_eps=cfg.layer_norm_eps,
            batch_first=True,
            norm_first=False,
            device=next(encoder.parameters()).device,
        )
        att = hf.attention.self
        pairs = [
            (
                layer.self_attn.in_proj_weight,
                torch.cat([att.query.weight, att.key.weight, att.value.weight]),
            ),
            (
                layer.self_attn.in_proj_bias,
                torch.cat([att.query.bias, att.key.bias, att.value.bias]),
            ),
            (layer.self_attn.out_proj.weight, hf.attention.output.dense.weight),
            (layer.self_attn.out_proj.bias, hf.attention.output.dense.bias),
            (layer.norm1.weight, hf.attention.output.LayerNorm.weight),
            (layer.norm1.bias, hf.attention.output.LayerNorm.bias),
            (layer.linear1.weight, hf.intermediate.dense.weight),
            (layer.linear1.bias, hf.intermediate.dense.bias),
            (layer.linear2.weight, hf.output.dense.weight),
            (layer.linear2.bias, hf.output.dense.bias),
            (layer.norm2.weight, hf.output.LayerNorm.weight),
            (layer.norm2.bias, hf.output.LayerNorm.bias),
        ]
        with torch.no_grad():
            for target, source in pairs:
                target.copy_(source)
        layers.append(layer)
    with warnings.catch_warnings(record=True) as caught:
        stack = torch.nn.TransformerEncoder(layers[0], len(layers), enable_nested_tensor=True)
    if not stack.use_nested_tensor:
        raise ValueError(
            "; ".join(str(w.message) for w in caught) or "torch declines nested tensors for it"
        )
    stack.layers = torch.nn.ModuleList(layers)
    for param in stack.parameters():
        param.requires_grad_(False)
    return stack.eval()
