"""multinerd.TransformerModel.v1 (configs/trf.cfg): its CPU prediction path must compute what
spacy-transformers' own path computes, for every grouping and after every update."""

import pytest

from scripts.architectures import length_groups
from scripts.tiny_transformer import build_tiny_transformer, write_tiny_config

# a nested copy that fails its check falls back with this warning: here that is a failure
pytestmark = pytest.mark.filterwarnings("error:multinerd.TransformerModel.v1")

TEXTS = [
    "Angela Merkel visited New York .",
    "No entities here",
    "AL-AIN beat Real Madrid in the final of the Asian Champions League on Saturday evening .",
    "Rome",
    "The wolf lives near Lake Victoria .",
]
TAGS = {0: [(0, 2, "PER"), (3, 5, "LOC")], 2: [(0, 1, "ORG"), (2, 4, "ORG")], 3: [(0, 1, "LOC")]}


def test_length_groups_sort_and_bound_the_padded_size():
    lengths = [5, 30, 2, 6, 5, 40]
    groups = length_groups(lengths, max_pieces=12)
    assert sorted(i for g in groups for i in g) == list(range(6))
    # each group is a run of the length-sorted texts
    runs = sorted(sorted(lengths[i] for i in g) for g in groups)
    assert [n for run in runs for n in run] == sorted(lengths)
    for g in groups:
        assert len(g) == 1 or max(lengths[i] for i in g) * len(g) <= 12
    assert {0, 2} in [set(g) for g in groups]  # 2 and 5: 2 x 5 = 10; a third (5) would make 15
    assert [30] in [[lengths[i] for i in g] for g in groups]  # longer than the bound: alone


@pytest.fixture(scope="module")
def nlp(tmp_path_factory):
    import spacy
    from spacy.training import Example
    from spacy.util import load_config

    from tests.conftest import ROOT

    base = tmp_path_factory.mktemp("arch")
    tiny = build_tiny_transformer(base / "tiny-bert", TEXTS * 10)
    cfg_path = write_tiny_config(ROOT / "configs" / "trf.cfg", base / "tiny.cfg")
    config = load_config(
        cfg_path,
        overrides={
            "paths.transformer": str(tiny),
            "system.mixed_precision": False,
            # the labels from the examples below, not from a corpus' labels file
            "paths.labels": str(base / "no-labels.json"),
            "initialize.components.ner.labels.require": False,
        },
        interpolate=True,
    )
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    examples = []
    for i, text in enumerate(TEXTS):
        doc = nlp.make_doc(text)
        ents = [(doc[s:e].start_char, doc[s:e].end_char, label) for s, e, label in TAGS.get(i, [])]
        examples.append(Example.from_dict(doc, {"entities": ents}))
    nlp.initialize(lambda: examples)
    import torch

    torch.manual_seed(0)
    with torch.no_grad():  # a fresh BERT has LayerNorm weights 1 and biases 0: make each one count
        for param in nlp.get_pipe("transformer").model.layers[0].shims[0]._model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    nlp._test_examples = examples
    return nlp


def plain_hidden(model, docs):
    """What spacy-transformers' own forward returns for the docs."""
    from spacy_transformers.layers.transformer_model import forward

    out, _ = forward(model, docs, False)
    return out


def assert_same_outputs(model, docs):
    import torch

    got = model.predict(docs)
    expected = plain_hidden(model, docs)
    mask = torch.as_tensor(expected.wordpieces.attention_mask).bool()
    a = torch.as_tensor(got.model_output.last_hidden_state)
    b = torch.as_tensor(expected.model_output.last_hidden_state)
    assert a.shape == b.shape
    assert torch.allclose(a[mask], b[mask], atol=1e-5)
    assert torch.allclose(
        torch.as_tensor(got.model_output.pooler_output),
        torch.as_tensor(expected.model_output.pooler_output),
        atol=1e-5,
    )


@pytest.mark.parametrize("pieces,nested", [(384, True), (12, True), (12, False), (10**6, False)])
def test_cpu_prediction_computes_what_spacy_transformers_computes(nlp, pieces, nested):
    model = nlp.get_pipe("transformer").model
    model.attrs["cpu_batch_pieces"], model.attrs["nested_tensors"] = pieces, nested
    try:
        docs = [nlp.make_doc(t) for t in TEXTS]
        assert_same_outputs(model, docs)
        predictor = model._func.state["predictor"]
        assert (predictor.max_pieces, predictor.nested) == (pieces, nested)
        assert (predictor.layers is not None) == nested
        shim = model.layers[0].shims[0]
        assert shim._model is predictor.encoder  # put back after the call
    finally:
        model.attrs["cpu_batch_pieces"], model.attrs["nested_tensors"] = 384, True


def test_the_predictor_is_rebuilt_after_an_update(nlp):
    model = nlp.get_pipe("transformer").model
    docs = [nlp.make_doc(t) for t in TEXTS]
    model.predict(docs)
    before = model._func.state["predictor"]
    nlp.update(nlp._test_examples, sgd=nlp.create_optimizer())
    assert "predictor" not in model._func.state
    assert_same_outputs(model, docs)  # the new weights, not the nested copy of the old ones
    assert model._func.state["predictor"] is not before
    assert model._func.state["predictor"].layers is not None


def test_pipeline_results_survive_serialization(nlp):
    import spacy

    texts = TEXTS * 3
    expected = [
        [(e.start_char, e.end_char, e.label_) for e in doc.ents]
        for doc in nlp.pipe(texts, batch_size=4)
    ]
    loaded = spacy.blank("en").from_config(nlp.config).from_bytes(nlp.to_bytes())
    model = loaded.get_pipe("transformer").model
    got = [
        [(e.start_char, e.end_char, e.label_) for e in doc.ents]
        for doc in loaded.pipe(texts, batch_size=4)
    ]
    assert got == expected
    assert model._func.state["predictor"].layers is not None
    # with the nested path switched off the entities are the same
    model.attrs["nested_tensors"] = False
    assert [
        [(e.start_char, e.end_char, e.label_) for e in d.ents] for d in loaded.pipe(texts)
    ] == expected


def test_an_encoder_without_a_nested_copy_keeps_the_plain_layers(nlp):
    from scripts.architectures import CPUPredictor

    encoder = nlp.get_pipe("transformer").model.layers[0].shims[0]._model
    encoder.config.hidden_act = "gelu_new"
    try:
        with pytest.warns(UserWarning, match="no nested-tensor path"):
            predictor = CPUPredictor(encoder, 384, nested=True)
        assert predictor.layers is None
    finally:
        encoder.config.hidden_act = "gelu"


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_cpu_predictor_matches_the_encoder_it_stands_in_for(kind):
    """BERT (the offline MiniLM) and RoBERTa (the default roberta-base) style encoders, with
    random weights, right-padded batches of mixed lengths, groups small enough to split them."""
    import torch
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    from scripts.architectures import CPUPredictor, nested_encoder, nested_forward

    torch.manual_seed(0)
    sizes = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    if kind == "bert":
        encoder, pad = BertModel(BertConfig(**sizes)), 0
    else:
        encoder, pad = (
            RobertaModel(RobertaConfig(**sizes, max_position_embeddings=64, pad_token_id=1)),
            1,
        )
    with torch.no_grad():
        for param in encoder.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    encoder.eval()
    lengths = [9, 3, 12, 5, 5, 2]
    ids = torch.full((len(lengths), 12), pad)
    mask = torch.zeros((len(lengths), 12), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, 100, (n,))
        mask[row, :n] = 1
    with torch.no_grad():
        expected = encoder(input_ids=ids, attention_mask=mask)
        predictor = CPUPredictor(encoder, max_pieces=16, nested=True)
        assert predictor.layers is not None
        got = predictor(input_ids=ids, attention_mask=mask)
        whole = nested_forward(encoder, nested_encoder(encoder), ids, mask)  # the batch in one go
    real = mask.bool()
    assert whole.shape == expected.last_hidden_state.shape
    assert torch.allclose(whole[real], expected.last_hidden_state[real], atol=1e-5)
    assert torch.allclose(got.last_hidden_state[real], expected.last_hidden_state[real], atol=1e-5)
    assert torch.allclose(got.pooler_output, expected.pooler_output, atol=1e-5)
    assert not got.last_hidden_state[~real].any()  # padded positions: zeros, never read
    encoder.config.hidden_act = "gelu_new"
    with pytest.raises(ValueError, match="exact GELU"):
        nested_encoder(encoder)


def test_an_encoder_off_the_cpu_takes_spacy_transformers_own_path(nlp, monkeypatch):
    """On a GPU the predictor must stand aside: no nested copy, and spacy-transformers' own
    forward runs with the encoder itself (checked without a GPU: torch's meta device and a
    predictor marked off the CPU stand in for one)."""
    import torch
    from transformers import BertConfig, BertModel

    from scripts.architectures import CPUPredictor

    sizes = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    off_cpu = CPUPredictor(BertModel(BertConfig(**sizes)).to("meta"), 384, nested=True)
    assert (off_cpu.on_cpu, off_cpu.layers) == (False, None)

    model = nlp.get_pipe("transformer").model
    docs = [nlp.make_doc(t) for t in TEXTS]
    expected = plain_hidden(model, docs)
    model.predict(docs)
    predictor = model._func.state["predictor"]
    monkeypatch.setattr(predictor, "on_cpu", False)

    def never(*args, **kwargs):
        raise AssertionError("the CPU predictor ran for an encoder off the CPU")

    monkeypatch.setattr(CPUPredictor, "__call__", never)
    got = model.predict(docs)
    assert model._func.state["predictor"] is predictor  # kept, not rebuilt on every batch
    assert model.layers[0].shims[0]._model is predictor.encoder
    assert torch.allclose(
        torch.as_tensor(got.model_output.last_hidden_state),
        torch.as_tensor(expected.model_output.last_hidden_state),
    )
