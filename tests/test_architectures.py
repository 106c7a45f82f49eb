"""multinerd.TransformerModel.v2 (configs/trf.cfg): its CPU prediction runs the encoder on
groups of texts of similar length, and must compute what spacy-transformers' own
TransformerModel.v3 computes with the same weights (the same entities, exactly; the same
hidden states within 1e-5 in float32; test_encoders.py checks it for every family); with a
spacy-transformers whose layout it does not know it keeps spacy-transformers' own path; v1
configs keep loading."""

import pytest

from scripts import architectures
from scripts.architectures import length_groups

from .encoders import (
    TEXTS,
    bit_for_bit,
    entities,
    norm_eps,
    plain_path,
    tiny_pipeline,
    with_model,
)

ATOL = 1e-5  # float32, the same weights, other padding: the hidden states agree this closely


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


@pytest.fixture(scope="module", params=["bert", "deberta-v3"])
def nlp(request, tmp_path_factory):
    """An initialized pipeline of configs/trf.cfg on a tiny random encoder: one family with a
    pooler, one without (every family, trained: test_encoders.py)."""
    return tiny_pipeline(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def plain(nlp):
    """The same pipeline with spacy-transformers' own TransformerModel.v3."""
    return plain_path(nlp)


def encoder_calls(nlp) -> list:
    """(texts, padded word pieces, longest text) of each call of the pipeline's encoder."""
    calls = []

    def record(module, args, kwargs):
        mask = kwargs["attention_mask"]
        calls.append((*mask.shape, int(mask.sum(dim=1).max())))

    encoder = nlp.get_pipe("transformer").model.transformer
    encoder.register_forward_pre_hook(record, with_kwargs=True)
    return calls


def hidden_states(nlp, docs):
    """The transformer's output for `docs` and the mask of its real (not padded) pieces."""
    import torch

    batch = nlp.get_pipe("transformer").model.predict(docs)
    return batch.model_output, torch.as_tensor(batch.wordpieces.attention_mask).bool()


@pytest.mark.parametrize("pieces", [12, 10**6])
def test_cpu_prediction_computes_what_spacy_transformers_computes(nlp, plain, pieces):
    import torch

    docs = [nlp.make_doc(t) for t in TEXTS]
    expected, real = hidden_states(plain, docs)
    grouped = with_model(nlp, cpu_batch_pieces=pieces)
    calls = encoder_calls(grouped)
    got, _ = hidden_states(grouped, docs)
    assert list(got.keys()) == list(expected.keys())  # every field the encoder returns
    for key in expected.keys():
        a, b = torch.as_tensor(got[key]), torch.as_tensor(expected[key])
        assert a.shape == b.shape, key
        if key == "last_hidden_state":  # spacy-transformers reads the real pieces only
            a, b = a[real], b[real]
        assert torch.allclose(a, b, atol=ATOL), key
    lengths = [int(n) for n in real.sum(dim=1)]
    if pieces >= max(lengths) * len(lengths):
        assert calls == [(*real.shape, max(lengths))]  # one group: the batch as it is
    else:
        assert len(calls) > 1
        assert sum(n for n, _, _ in calls) == len(docs)
        for n, width, longest in calls:  # cut to its longest text, within the bound
            assert width == longest
            assert n == 1 or n * width <= pieces


def test_same_entities_as_spacy_transformers_and_after_serialization(nlp, plain):
    texts = TEXTS * 3
    expected = entities(plain, texts)
    assert any(expected), "the test needs a pipeline that finds entities"
    assert entities(nlp, texts) == expected
    loaded = with_model(nlp)  # from bytes, as spacy.load does
    assert entities(loaded, texts) == expected


def test_bfloat16_runs_the_encoder_in_bfloat16_and_returns_float32(nlp, plain):
    import torch

    docs = [nlp.make_doc(t) for t in TEXTS]
    expected, real = hidden_states(plain, docs)
    got, _ = hidden_states(with_model(nlp, cpu_bfloat16=True, cpu_batch_pieces=12), docs)
    for key in expected.keys():
        a, b = torch.as_tensor(got[key]), torch.as_tensor(expected[key])
        assert a.dtype == torch.float32  # what spacy-transformers turns into numpy arrays
        a, b = (a[real], b[real]) if key == "last_hidden_state" else (a, b)
        assert (a - b).abs().max() > ATOL  # computed in bfloat16
        assert torch.allclose(a, b, atol=0.1)
    for doc in with_model(nlp, cpu_bfloat16=True).pipe(TEXTS):  # through spaCy to numpy
        assert doc._.trf_data.model_output.last_hidden_state.dtype == "float32"


def test_training_runs_the_whole_batch(nlp):
    from spacy.training import Example

    trained = with_model(nlp, cpu_batch_pieces=12)
    calls = encoder_calls(trained)
    examples = [
        Example.from_dict(trained.make_doc(text), {"entities": []}) for text in TEXTS
    ]  # the loss does not matter here, only the batch the encoder gets
    trained.update(examples, sgd=trained.create_optimizer())
    assert calls and all(n == len(TEXTS) for n, _, _ in calls)


def test_the_layout_of_the_installed_spacy_transformers_is_the_known_one(nlp):
    model = nlp.get_pipe("transformer").model
    found = architectures.encoder_layer(model)
    assert not isinstance(found, str), found
    layer, _ = found
    assert architectures.hf_encoder(layer) is model.transformer  # its own public property


def test_the_installed_spacy_transformers_saves_the_config_where_it_is_read_back(nlp):
    """keep_config_exact reads the encoder's config from what the shim's to_bytes wrote."""
    import srsly

    model = nlp.get_pipe("transformer").model
    shim = model.layers[0].shims[0]
    assert all(hasattr(shim, name) for name in architectures.SHIM_ATTRIBUTES)
    saved = srsly.msgpack_loads(shim.to_bytes())["config"]
    assert bit_for_bit(saved) == bit_for_bit(model.transformer.config.to_dict())
    loaded = with_model(nlp).get_pipe("transformer").model.transformer
    assert bit_for_bit(loaded.config.to_dict()) == bit_for_bit(saved)
    assert norm_eps(loaded) == norm_eps(model.transformer)


def test_another_shim_loads_the_config_as_spacy_transformers_does_and_says_so_once(
    nlp, plain, monkeypatch
):
    monkeypatch.setattr(architectures, "SHIM_ATTRIBUTES", ("an_attribute_renamed_later",))
    with pytest.warns(UserWarning) as caught:
        changed = with_model(nlp)
    said = [w for w in caught if w.category is architectures.ConfigWarning]
    assert len(said) == 1 and "floats rounded to 9 decimals" in str(said[0].message)
    encoder = changed.get_pipe("transformer").model.transformer
    assert norm_eps(encoder) == norm_eps(plain.get_pipe("transformer").model.transformer)
    assert entities(changed, TEXTS) == entities(plain, TEXTS)


def test_saved_bytes_without_a_config_or_one_that_fails_load_as_they_are_and_say_so(nlp):
    import srsly

    shim = with_model(nlp).get_pipe("transformer").model.layers[0].shims[0]
    encoder = shim._hfmodel.transformer
    data = srsly.msgpack_dumps({"state": b""})  # a later layout: no "config"
    with pytest.warns(architectures.ConfigWarning, match="no config where expected"):
        architectures.load_exact_config(shim, lambda shim, data: shim, data)
    assert shim._hfmodel.transformer is encoder
    data = srsly.msgpack_dumps({"config": {"hidden_size": "wide"}})  # cannot be built
    with pytest.warns(architectures.ConfigWarning, match="cannot be kept exact"):
        architectures.load_exact_config(shim, lambda shim, data: shim, data)
    assert shim._hfmodel.transformer is encoder


def test_another_layout_keeps_spacy_transformers_path_and_says_so_once(nlp, plain, monkeypatch):
    from importlib.metadata import version

    monkeypatch.setattr(architectures, "ENCODER_LAYER", "a-layer-renamed-in-a-later-release")
    with pytest.warns(architectures.PlainPathWarning) as caught:
        changed = with_model(nlp, cpu_batch_pieces=12)
    assert len(caught) == 1
    assert f"spacy-transformers {version('spacy-transformers')}" in str(caught[0].message)
    calls = encoder_calls(changed)
    assert entities(changed, TEXTS) == entities(plain, TEXTS)
    assert [n for n, _, _ in calls] == [len(TEXTS)]  # not grouped


def test_an_encoder_off_the_cpu_runs_the_whole_batch(nlp, monkeypatch):
    """On a GPU the encoder gets the batch as spacy-transformers builds it (this test runs
    on a CPU: the encoder says it is on a GPU, and the call is stopped before it runs)."""
    import torch

    class Stop(Exception):
        pass

    model = with_model(nlp, cpu_batch_pieces=12).get_pipe("transformer").model
    wordpieces = model.predict([nlp.make_doc(t) for t in TEXTS]).wordpieces
    layer, _ = architectures.encoder_layer(model)
    batches = []

    def stop(model, wordpieces, is_train):
        batches.append(len(wordpieces))
        raise Stop

    monkeypatch.setattr(
        type(model.transformer), "device", property(lambda self: torch.device("cuda"))
    )
    with pytest.raises(Stop):
        architectures.grouped_forward(layer, wordpieces, False, stop, 12, False)
    assert batches == [len(TEXTS)]


def test_v1_configs_load_with_their_settings_and_give_the_same_entities(nlp, plain):
    """Pipelines trained before v2 name multinerd.TransformerModel.v1 with nested_tensors."""
    old = with_model(
        nlp, "multinerd.TransformerModel.v1", cpu_batch_pieces=384, nested_tensors=True
    )
    assert entities(old, TEXTS * 3) == entities(plain, TEXTS * 3)
    with pytest.raises(Exception, match="nested_tensors"):  # v2 has no such setting
        with_model(nlp, nested_tensors=True)


def test_an_output_that_cannot_be_regrouped_takes_the_plain_path_and_says_so_once(
    nlp, plain, monkeypatch
):
    monkeypatch.setattr(architectures, "regroup", lambda parts, shape: None)
    model = with_model(nlp, cpu_batch_pieces=12)
    with pytest.warns(architectures.PlainPathWarning, match="cannot be put back") as caught:
        assert entities(model, TEXTS) == entities(plain, TEXTS)
        calls = encoder_calls(model)
        assert entities(model, TEXTS) == entities(plain, TEXTS)
    assert len(caught) == 1
    assert [n for n, _, _ in calls] == [len(TEXTS)]  # after the first batch: not grouped
