"""Custom layers of this project's pipelines, registered with spaCy.

`spacy train`, `spacy evaluate` and `spacy package` get this file with `--code`, and the
packages carry it, so `spacy.load("en_...")` needs nothing from the project checkout.
"""

from functools import partial
from typing import Callable, List, Optional

from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, concatenate
from thinc.layers.pytorchwrapper import forward as pytorch_forward
from thinc.types import Floats2d


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


@registry.architectures("multinerd.TransformerModel.v2")
def transformer_model(
    name: str,
    get_spans: Callable,
    tokenizer_config: Optional[dict] = None,
    transformer_config: Optional[dict] = None,
    mixed_precision: bool = False,
    grad_scaler_config: Optional[dict] = None,
    cpu_batch_pieces: int = 384,
    cpu_bfloat16: bool = False,
) -> Model:
    """spacy-transformers.TransformerModel.v3 (same settings, weights, training and results)
    that predicts faster on a CPU: the encoder runs on groups of the batch's texts sorted by
    their number of word pieces, at most `cpu_batch_pieces` padded word pieces a group, so that
    little padding is computed. (The component's own sub-batches, `max_batch_items`, are sized
    by spaCy tokens, a weaker guide, and each runs the whole model: word-piece tokenizer,
    alignment and all.) `cpu_bfloat16` runs the encoder under torch's bfloat16 autocast: faster
    on CPUs with bfloat16 instructions (AVX512-BF16, AMX), slower on others, and the results
    change a little (docs/inference.md). Training, and prediction on a GPU, are
    spacy-transformers' own."""
    from spacy_transformers.architectures import create_TransformerModel_v3

    model = create_TransformerModel_v3(
        name,
        get_spans,
        tokenizer_config or {},
        transformer_config or {},
        mixed_precision,
        grad_scaler_config or {},
    )
    encoder = model.layers[0]  # spacy-transformers' HFWrapper: word pieces in, encoder output out
    encoder.replace_callbacks(
        partial(grouped_forward, max_pieces=cpu_batch_pieces, bfloat16=cpu_bfloat16),
        init=encoder.init,
    )
    return model


@registry.architectures("multinerd.TransformerModel.v1")
def transformer_model_v1(
    name: str,
    get_spans: Callable,
    tokenizer_config: Optional[dict] = None,
    transformer_config: Optional[dict] = None,
    mixed_precision: bool = False,
    grad_scaler_config: Optional[dict] = None,
    cpu_batch_pieces: int = 384,
    nested_tensors: bool = True,
) -> Model:
    """The first version, kept so that pipelines whose config names it keep loading: v2 with
    the same settings. `nested_tensors` is accepted and ignored: the copy of the encoder's
    layers in torch's nested-tensor path computed the same hidden states, more slowly than the
    grouping alone and with a second copy of the weights (benchmarks/RESULTS.md)."""
    return transformer_model(
        name,
        get_spans,
        tokenizer_config,
        transformer_config,
        mixed_precision,
        grad_scaler_config,
        cpu_batch_pieces,
    )


def grouped_forward(model: Model, wordpieces, is_train: bool, max_pieces: int, bfloat16: bool):
    """The forward of spacy-transformers' HFWrapper (thinc's PyTorchWrapper) that, predicting
    on a CPU, runs the encoder on `length_groups` of the texts, each cut to the word pieces its
    texts use (under bfloat16 autocast if asked), and puts the hidden states back in the
    batch's order and shape, in float32 (spacy-transformers reads only the real positions, not
    the padding). Encoders asked for more outputs than the last hidden states and pooler
    output take the plain path."""
    import torch
    from spacy_transformers.data_classes import WordpieceBatch

    encoder = model.shims[0]._hfmodel.transformer
    config = encoder.config
    if (
        is_train
        or encoder.device.type != "cpu"
        or config.output_hidden_states
        or config.output_attentions
        or config.is_decoder
    ):
        return pytorch_forward(model, wordpieces, is_train)
    n_texts, n_pieces = wordpieces.input_ids.shape
    hidden = pooled = None
    for group in length_groups(wordpieces.lengths, max_pieces):
        mask = wordpieces.attention_mask[group]
        width = int(mask.any(axis=0).nonzero()[0].max()) + 1  # whichever side is padded
        types = wordpieces.token_type_ids
        rows = WordpieceBatch(
            strings=[wordpieces.strings[i] for i in group],
            input_ids=wordpieces.input_ids[group, :width],
            attention_mask=mask[:, :width],
            lengths=[wordpieces.lengths[i] for i in group],
            token_type_ids=None if types is None else types[group, :width],
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            output, _ = pytorch_forward(model, rows, False)
        if hidden is None:
            hidden = torch.zeros((n_texts, n_pieces, output.last_hidden_state.shape[-1]))
            if output.get("pooler_output") is not None:
                pooled = torch.zeros((n_texts, output.pooler_output.shape[-1]))
        hidden[group, :width] = output.last_hidden_state.float()
        if pooled is not None:
            pooled[group] = output.pooler_output.float()

    def backprop(d_output):
        raise ValueError("grouped_forward only predicts")

    return type(output)(last_hidden_state=hidden, pooler_output=pooled), backprop


def length_groups(lengths: List[int], max_pieces: int) -> List[List[int]]:
    """Indices of the texts sorted by length, cut into groups whose size padded to their
    longest text is at most max_pieces (a longer text is a group of its own):
    spacy-transformers' batch_by_length, given word-piece counts instead of docs."""
    from spacy_transformers.util import batch_by_length

    return batch_by_length([range(n) for n in lengths], max_pieces)
