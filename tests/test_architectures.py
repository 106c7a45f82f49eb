"""The transformer of configs/trf.cfg: spacy-transformers' component and model, with the CPU's
settings (multinerd_transformer: sub-batches by word pieces on a CPU, bfloat16 on
request) and an encoder that loads with its exact config. It must compute what
spacy-transformers' own component computes with the same weights (the same entities,
exactly; the same hidden states within 1e-5 in float32; test_encoders.py checks it for every
family); configs saved by earlier versions keep loading."""

import subprocess
import sys

import pytest

from scripts import architectures

from .conftest import ROOT
from .encoders import (
    TEXTS,
    bit_for_bit,
    entities,
    fields,
    norm_eps,
    plain_path,
    tiny_pipeline,
    trf_outputs,
    with_component,
    with_model,
)

ATOL = 1e-5  # float32, the same weights, other padding: the hidden states agree this closely


@pytest.fixture(scope="module", params=["bert", "deberta-v3"])
def nlp(request, tmp_path_factory):
    """An initialized pipeline of configs/trf.cfg on a tiny random encoder: one family with a
    pooler, one without (every family, trained: test_encoders.py)."""
    return tiny_pipeline(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def plain(nlp):
    """The same pipeline with spacy-transformers' own component and TransformerModel.v3."""
    return plain_path(nlp)


def encoder_calls(nlp) -> list:
    """(texts, padded word pieces) of each call of the pipeline's encoder."""
    calls = []

    def record(module, args, kwargs):
        calls.append(tuple(kwargs["attention_mask"].shape))

    encoder = nlp.get_pipe("transformer").model.transformer
    encoder.register_forward_pre_hook(record, with_kwargs=True)
    return calls


def test_the_config_builds_the_component_with_the_cpus_settings(nlp):
    component = nlp.get_pipe("transformer")
    assert isinstance(component, architectures.CPUSettingsTransformer)
    assert component.cfg == {
        "max_batch_items": 4096,
        "cpu_max_batch_pieces": 384,
        "cpu_bfloat16": False,
    }


def test_on_a_cpu_it_predicts_in_sub_batches_of_cpu_max_batch_pieces(nlp, plain, monkeypatch):
    """Sub-batches of texts of similar length in word pieces, at most cpu_max_batch_pieces
    padded pieces (the longest text's pieces times the texts; a longer text alone), computing
    what spacy-transformers' own component computes."""
    import numpy

    small = with_component(nlp, cpu_max_batch_pieces=40)
    batches = []
    predict = architectures.CPUSettingsTransformer.predict
    tokenizer = small.get_pipe("transformer").model.tokenizer

    def record(self, docs):
        batches.append([len(tokenizer(doc.text)["input_ids"]) for doc in docs])
        return predict(self, docs)

    monkeypatch.setattr(architectures.CPUSettingsTransformer, "predict", record)
    plain_calls = encoder_calls(plain)
    got, want = trf_outputs(small, TEXTS), trf_outputs(plain, TEXTS)
    assert len(plain_calls) == 1  # spacy-transformers: max_batch_items, the batch at once
    assert len(batches) > 1 and sum(map(len, batches)) == len(TEXTS)
    assert all(len(b) == 1 or len(b) * max(b) <= 40 for b in batches), batches
    pieces = sorted(n for b in batches for n in b)
    assert [n for b in sorted(batches) for n in sorted(b)] == pieces  # similar lengths together
    for a, b in zip(got, want):
        for key, value in fields(b).items():
            assert numpy.allclose(fields(a)[key], value, atol=ATOL), key
    assert entities(small, TEXTS * 3) == entities(plain, TEXTS * 3)


def test_off_the_cpu_it_predicts_in_sub_batches_of_max_batch_items(nlp, monkeypatch):
    """On a GPU the component's max_batch_items holds, as in spacy-transformers (this test
    runs on a CPU: the component is told it is not on one)."""
    small = with_component(nlp, cpu_max_batch_pieces=12)
    calls = encoder_calls(small)
    monkeypatch.setattr(architectures.CPUSettingsTransformer, "on_cpu", lambda self: False)
    entities(small, TEXTS)
    assert [n for n, _ in calls] == [len(TEXTS)]


def test_the_same_entities_as_spacy_transformers_and_after_serialization(nlp, plain, tmp_path):
    import spacy

    texts = TEXTS * 3
    expected = entities(plain, texts)
    assert any(expected), "the test needs a pipeline that finds entities"
    assert entities(nlp, texts) == expected
    assert entities(with_model(nlp), texts) == expected  # from bytes
    with_component(nlp, cpu_max_batch_pieces=40).to_disk(tmp_path / "saved")
    loaded = spacy.load(tmp_path / "saved")  # the CPU settings come back with it
    assert loaded.get_pipe("transformer").cfg["cpu_max_batch_pieces"] == 40
    assert entities(loaded, texts) == expected


def test_bfloat16_runs_the_encoder_in_bfloat16_and_gives_float32(nlp, plain):
    import numpy

    got = trf_outputs(with_component(nlp, cpu_bfloat16=True), TEXTS)
    want = trf_outputs(plain, TEXTS)
    for a, b in zip(got, want):
        for key, value in fields(b).items():
            found = fields(a)[key]
            assert found.dtype == "float32", key  # what the listeners read
            assert numpy.allclose(found, value, atol=0.1), key
    differences = [
        abs(fields(a)["last_hidden_state"] - fields(b)["last_hidden_state"]).max()
        for a, b in zip(got, want)
    ]
    assert max(differences) > ATOL  # computed in bfloat16


def test_training_runs_the_whole_batch(nlp):
    from spacy.training import Example

    trained = with_component(nlp, cpu_max_batch_pieces=12)
    calls = encoder_calls(trained)
    examples = [
        Example.from_dict(trained.make_doc(text), {"entities": []}) for text in TEXTS
    ]  # the loss does not matter here, only the batch the encoder gets
    trained.update(examples, sgd=trained.create_optimizer())
    assert calls and all(n == len(TEXTS) for n, _ in calls)


def test_configs_of_earlier_versions_load_and_give_the_same_entities(nlp, plain):
    """Pipelines saved before name multinerd.TransformerModel.v1 (with nested_tensors), or v2
    with its CPU settings of then (cpu_batch_pieces, cpu_bfloat16): accepted, not used."""
    v1 = with_model(nlp, "multinerd.TransformerModel.v1", cpu_batch_pieces=384, nested_tensors=True)
    v2 = with_model(nlp, cpu_batch_pieces=384, cpu_bfloat16=False)
    for old in (v1, v2):
        assert entities(old, TEXTS * 3) == entities(plain, TEXTS * 3)


def test_a_second_copy_of_the_file_registers_nothing_twice():
    """A package carries a copy of scripts/architectures.py: loading it beside the project's
    own (annotate, the demo) must not stop at spaCy's refusal of a second factory."""
    code = (  # in a process of its own: the copy re-registers the architectures it names
        "import importlib.util, sys\n"
        "from spacy.language import Language\n"
        "from scripts import architectures\n"
        "spec = importlib.util.spec_from_file_location('a_packages_copy', sys.argv[1])\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "factory = Language.factories[architectures.CPU_FACTORY]\n"
        "print(factory is architectures.make_cpu_settings_transformer)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "scripts" / "architectures.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == "True"  # the first registration stands


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
