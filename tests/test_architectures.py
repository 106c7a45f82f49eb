"""multinerd.TransformerModel.v2 (configs/trf.cfg): its CPU prediction runs the encoder on
groups of texts of similar length, and must compute what spacy-transformers' own
TransformerModel.v3 computes with the same weights; v1 configs must keep loading."""

import pytest

from scripts import architectures
from scripts.architectures import length_groups
from scripts.tiny_transformer import build_tiny_transformer, write_tiny_config

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
    import torch
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
    torch.manual_seed(0)
    with torch.no_grad():  # a fresh BERT has LayerNorm weights 1 and biases 0: make each one count
        for param in nlp.get_pipe("transformer").model.transformer.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    nlp._test_examples = examples
    return nlp


def with_model(nlp, architecture="multinerd.TransformerModel.v2", **settings):
    """The same pipeline and weights with another transformer architecture or settings."""
    import spacy

    config = nlp.config.copy()
    model = dict(config["components"]["transformer"]["model"])
    for key in ("cpu_batch_pieces", "cpu_bfloat16"):  # spacy-transformers' settings remain
        model.pop(key)
    model.update(settings, **{"@architectures": architecture})
    config["components"]["transformer"]["model"] = model
    return spacy.blank("en").from_config(config).from_bytes(nlp.to_bytes())


@pytest.fixture(scope="module")
def plain(nlp):
    """The same pipeline with spacy-transformers' own TransformerModel.v3."""
    return with_model(nlp, "spacy-transformers.TransformerModel.v3")


@pytest.fixture
def encoder_calls(monkeypatch):
    """(texts, padded word pieces, longest text) of each encoder call."""
    calls = []

    def recording(model, wordpieces, is_train):
        calls.append((*wordpieces.input_ids.shape, max(wordpieces.lengths)))
        return pytorch_forward(model, wordpieces, is_train)

    pytorch_forward = architectures.pytorch_forward
    monkeypatch.setattr(architectures, "pytorch_forward", recording)
    return calls


def entities(nlp, texts):
    return [
        [(e.start_char, e.end_char, e.label_) for e in doc.ents]
        for doc in nlp.pipe(texts, batch_size=8)
    ]


@pytest.mark.parametrize("pieces", [12, 40, 384, 10**6])
def test_cpu_prediction_computes_what_spacy_transformers_computes(
    nlp, plain, encoder_calls, pieces
):
    import torch

    docs = [nlp.make_doc(t) for t in TEXTS]
    expected = plain.get_pipe("transformer").model.predict(docs)
    encoder_calls.clear()
    got = with_model(nlp, cpu_batch_pieces=pieces).get_pipe("transformer").model.predict(docs)
    real = torch.as_tensor(expected.wordpieces.attention_mask).bool()
    a, b = (torch.as_tensor(x.model_output.last_hidden_state) for x in (got, expected))
    assert a.shape == b.shape
    assert torch.allclose(a[real], b[real], atol=1e-5)
    assert torch.allclose(
        torch.as_tensor(got.model_output.pooler_output),
        torch.as_tensor(expected.model_output.pooler_output),
        atol=1e-5,
    )
    lengths = expected.wordpieces.lengths
    if pieces >= max(lengths) * len(lengths):
        assert encoder_calls == [(*real.shape, max(lengths))]  # one group: the batch as it is
    else:
        assert len(encoder_calls) > 1
        assert sum(n for n, _, _ in encoder_calls) == len(docs)
        for n, width, longest in encoder_calls:  # cut to its longest text, within the bound
            assert width == longest
            assert n == 1 or n * width <= pieces


def test_bfloat16_runs_the_encoder_in_bfloat16_and_returns_float32(nlp, plain):
    import torch

    docs = [nlp.make_doc(t) for t in TEXTS]
    expected_batch = plain.get_pipe("transformer").model.predict(docs)
    expected = expected_batch.model_output
    model = with_model(nlp, cpu_bfloat16=True, cpu_batch_pieces=12).get_pipe("transformer").model
    got = model.predict(docs).model_output
    real = torch.as_tensor(expected_batch.wordpieces.attention_mask).bool()
    for key in ("last_hidden_state", "pooler_output"):
        a, b = torch.as_tensor(got[key]), torch.as_tensor(expected[key])
        assert a.dtype == torch.float32  # what spacy-transformers turns into numpy arrays
        a, b = (a[real], b[real]) if key == "last_hidden_state" else (a, b)
        assert (a - b).abs().max() > 1e-3  # computed in bfloat16 (float32: < 1e-5)
        assert torch.allclose(a, b, atol=0.1)
    for doc in with_model(nlp, cpu_bfloat16=True).pipe(TEXTS):  # through spaCy to numpy
        assert doc._.trf_data.model_output.last_hidden_state.dtype == "float32"


def test_same_entities_as_spacy_transformers_and_after_serialization(nlp, plain):
    texts = TEXTS * 3
    expected = entities(plain, texts)
    assert any(expected), "the test needs a pipeline that finds entities"
    assert entities(nlp, texts) == expected
    loaded = with_model(nlp)  # from bytes, as spacy.load does
    assert entities(loaded, texts) == expected


def test_v1_configs_load_with_their_settings_and_give_the_same_entities(nlp, plain):
    """Pipelines trained before v2 name multinerd.TransformerModel.v1 with nested_tensors."""
    old = with_model(
        nlp, "multinerd.TransformerModel.v1", cpu_batch_pieces=384, nested_tensors=True
    )
    assert entities(old, TEXTS * 3) == entities(plain, TEXTS * 3)
    with pytest.raises(Exception, match="nested_tensors"):  # v2 has no such setting
        with_model(nlp, nested_tensors=True)


def test_training_runs_the_whole_batch(nlp, encoder_calls):
    trained = with_model(nlp, cpu_batch_pieces=12)
    trained.update(nlp._test_examples, sgd=trained.create_optimizer())
    assert encoder_calls and all(n == len(TEXTS) for n, _, _ in encoder_calls)


def test_an_encoder_off_the_cpu_runs_the_whole_batch(nlp, monkeypatch):
    """On a GPU the encoder gets the batch as spacy-transformers builds it (this machine has
    no GPU: the encoder says it is on one, and the call is stopped before it runs)."""
    import torch

    class Stop(Exception):
        pass

    encoder_calls = []

    def stop(model, wordpieces, is_train):
        encoder_calls.append(len(wordpieces))
        raise Stop

    model = with_model(nlp, cpu_batch_pieces=12).get_pipe("transformer").model
    monkeypatch.setattr(
        type(model.transformer), "device", property(lambda self: torch.device("cuda"))
    )
    monkeypatch.setattr(architectures, "pytorch_forward", stop)
    with pytest.raises(Stop):
        model.predict([nlp.make_doc(t) for t in TEXTS])
    assert encoder_calls == [len(TEXTS)]
