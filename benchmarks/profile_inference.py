"""Where the CPU time of `nlp.pipe` goes, for benchmarks/RESULTS.md (the figures behind the
"why not 2x" analysis of bench_inference):

1. padding: padded word pieces per real one when the transformer runs on spacy-transformers'
   length-sorted sub-batches of at most N padded words (`max_batch_items`), against the HF
   pipeline's unsorted batches;
2. wall time of the transformer component alone, of the whole pipeline and of the tokenizer;
3. cProfile: the functions with the most own time, the share of torch's linear layers and the
   GFLOP/s they run at (floating-point operations counted by hooks on the encoder's
   torch.nn.Linear modules), beside what a bare torch.nn.Linear of the encoder's sizes reaches
   on this machine at a few row counts (the most the linear layers can give);
4. with --wordpiece: words/s when the sub-batches are sized by word pieces instead of words
   (spacy-transformers' batch_by_length patched; median of 2 passes each);
5. with --int8: words/s and exact-span F1 of the whole pipeline with the encoder's linear layers
   quantized to int8 (torch's dynamic quantization) against fp32, alternately, median of 2;
6. with --nested: the encoder alone (embeddings and layers, no spaCy) on the same sentences:
   HF's BertModel on the HF pipeline's unsorted batches and on the pipeline's length-sorted
   sub-batches, against the same weights in torch's nested-tensor TransformerEncoder fast path,
   which skips padding altogether (median of 3). HF unsorted over HF sorted is the most the
   whole pipeline could gain over the HF pipeline from padding, with nothing else costing time.

    python -m benchmarks.profile_inference \
        --spacy-model benchmarks/runs/accuracy/spacy-model/model-best \
        --hf-model benchmarks/runs/accuracy/hf-model --limit 1200 --wordpiece --int8 --nested
"""

import cProfile
import io
import pstats
import statistics
import time
from pathlib import Path
from typing import List

import typer

from scripts.architectures import length_groups, nested_encoder, nested_forward

from .bench_inference import exact_f1, load_test
from .common import ROOT, linear_gflops


def sub_batches(lengths: List[int], batch_size: int, max_items: int) -> List[List[int]]:
    """The sentence indices of each sub-batch the transformer runs on: batches of batch_size,
    each cut into sub-batches of at most max_items by `lengths` (spacy-transformers'
    batch_by_length, as in its component's pipe)."""
    from spacy.util import minibatch

    subs = []
    for outer in minibatch(range(len(lengths)), batch_size):
        groups = length_groups([lengths[i] for i in outer], max_items)
        subs.extend([outer[i] for i in group] for group in groups)
    return subs


def padding_ratio(lengths: List[int], pieces: List[int], batch_size: int, max_items: int) -> float:
    """Padded word pieces per real one when each sub-batch is padded to its longest."""
    padded = sum(
        max(pieces[i] for i in sub) * len(sub)
        for sub in sub_batches(lengths, batch_size, max_items)
    )
    return padded / sum(pieces)


def main(
    spacy_model: str = typer.Option(..., help="spaCy pipeline: path or installed package"),
    hf_model: str = typer.Option(
        ..., help="fine-tuned transformers model directory (its tokenizer)"
    ),
    assets: Path = typer.Option(ROOT / "assets" / "conll2003"),
    limit: int = typer.Option(1200, help="first N test sentences"),
    batch_size: int = typer.Option(64),
    max_batch_items: int = typer.Option(256, help="the transformer's sub-batch size for parts 2-4"),
    wordpiece: bool = typer.Option(False, help="also time sub-batches sized by word pieces"),
    int8: bool = typer.Option(False, help="also time the pipeline with int8 dynamic quantization"),
    nested: bool = typer.Option(
        False, help="also time the encoder alone, padded and as nested tensors"
    ),
):
    import spacy
    import spacy_transformers.pipeline_component as trf_component
    import torch
    from transformers import AutoTokenizer

    texts, gold, n_words = load_test(assets, limit)
    nlp = spacy.load(spacy_model)
    tokenizer = AutoTokenizer.from_pretrained(hf_model)
    pieces = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    lengths = [len(nlp.make_doc(t)) for t in texts]
    print(
        f"{len(texts):,} test sentences, {n_words:,} words, {sum(pieces):,} word pieces, "
        f"batch size {batch_size}, "
        f"torch threads {torch.get_num_threads()}"
    )

    print("\n1. padded word pieces per real one")
    for items in (128, 256, 512, 4096):
        print(
            f"   max_batch_items {items:>5} (words): "
            f"{padding_ratio(lengths, pieces, batch_size, items):.2f}"
        )
    print(
        f"   HF pipeline, unsorted batches of {batch_size}: "
        f"{padding_ratio(pieces, pieces, batch_size, 10**9):.2f}"
    )

    trf = nlp.get_pipe("transformer")
    trf.cfg["max_batch_items"] = max_batch_items
    list(nlp.pipe(texts[:100], batch_size=batch_size))  # warm-up

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    print(f"\n2. wall time, max_batch_items {max_batch_items}")
    with nlp.select_pipes(enable=["transformer"]):
        t_trf = timed(lambda: list(nlp.pipe(texts, batch_size=batch_size)))
    t_all = timed(lambda: list(nlp.pipe(texts, batch_size=batch_size)))
    t_tok = timed(lambda: [nlp.make_doc(t) for t in texts])
    print(
        f"   whole pipeline {t_all:.1f} s ({n_words / t_all:,.0f} words/s); "
        "transformer component alone "
        f"{t_trf:.1f} s ({100 * t_trf / t_all:.0f}%); tokenizer {t_tok:.2f} s"
    )

    flops = [0]

    def count(module, inputs, output):
        flops[0] += 2 * inputs[0].numel() * module.out_features

    linears = [
        m
        for node in trf.model.walk()
        for shim in node.shims
        for m in shim._model.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    hooks = [m.register_forward_hook(count) for m in linears]
    profile = cProfile.Profile()
    profile.enable()
    t_prof = timed(lambda: list(nlp.pipe(texts, batch_size=batch_size)))
    profile.disable()
    for hook in hooks:
        hook.remove()
    stats = pstats.Stats(profile)
    linear_s = sum(
        row[2]
        for key, row in stats.stats.items()
        if key[2] == "<built-in method torch._C._nn.linear>"
    )
    encoder_s = max(row[3] for key, row in stats.stats.items() if key[2] == "_wrapped_call_impl")
    train_s = sum(
        row[3] for key, row in stats.stats.items() if key[2] == "train" and "torch" in key[0]
    )
    print(f"\n3. cProfile ({t_prof:.1f} s with the profiler on)")
    print(
        f"   the encoder's torch forward: {encoder_s:.1f} s ({100 * encoder_s / t_prof:.0f}%); "
        "everything else "
        "(spaCy tokenizer, word-piece tokenizer and alignment, NER, Python) "
        f"{t_prof - encoder_s:.1f} s, of it "
        f"{train_s:.2f} s in thinc switching the torch modules to eval() and back for each call"
    )
    print(
        f"   torch linear layers: {linear_s:.1f} s ({100 * linear_s / t_prof:.0f}%), "
        f"{flops[0] / 1e9:,.0f} GFLOP at {flops[0] / linear_s / 1e9:.0f} GFLOP/s"
    )
    sizes = sorted({(m.in_features, m.out_features) for m in linears})
    for rows in (256, 512, 4096):
        reached = ", ".join(
            f"{n_in}->{n_out} {linear_gflops(rows, n_in, n_out):.0f}" for n_in, n_out in sizes
        )
        print(f"   a bare torch.nn.Linear on {rows:>4} rows: {reached} GFLOP/s")
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(10)
    print("   " + "\n   ".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))

    if wordpiece:
        original = trf_component.batch_by_length

        n_pieces = dict(zip(texts, pieces))  # counted once, outside the timed passes

        def by_pieces(docs, max_items):  # each doc sized by its word pieces
            return original([range(n_pieces[d.text]) for d in docs], max_items)

        print("\n4. sub-batches sized by words or by word pieces (median of 2 passes)")
        runs = {}
        try:
            for _ in range(2):
                for name, fn, items in (
                    ("words", original, max_batch_items),
                    ("word pieces", by_pieces, 384),
                    ("word pieces", by_pieces, 640),
                ):
                    trf_component.batch_by_length = fn
                    trf.cfg["max_batch_items"] = items
                    runs.setdefault((name, items), []).append(
                        timed(lambda: list(nlp.pipe(texts, batch_size=batch_size)))
                    )
        finally:
            trf_component.batch_by_length = original
            trf.cfg["max_batch_items"] = max_batch_items
        for (name, items), seconds in runs.items():
            print(
                f"   {name} <= {items}: {n_words / statistics.median(seconds):,.0f} words/s "
                f"(passes {', '.join(f'{s:.1f}' for s in seconds)} s)"
            )

    if int8:
        int8_part(nlp, trf, texts, gold, n_words, batch_size, timed)
    if nested:
        nested_part(hf_model, tokenizer, texts, lengths, batch_size, max_batch_items, timed)


def int8_part(nlp, trf, texts, gold, n_words, batch_size, timed):
    import torch

    shim = trf.model.layers[0].shims[0]
    fp32 = shim._model
    models = {
        "fp32": fp32,
        "int8": torch.ao.quantization.quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8),
    }
    print(
        "\n5. int8 dynamic quantization of the encoder's linear layers "
        "(median of 2 passes, alternating)"
    )
    runs, f1 = {}, {}
    try:
        for order in (["fp32", "int8"], ["int8", "fp32"]):
            for name in order:
                model = models[name]
                shim._model = model
                found = []
                seconds = timed(
                    lambda found=found: found.extend(
                        (i, e.start_char, e.end_char, e.label_)
                        for i, doc in enumerate(nlp.pipe(texts, batch_size=batch_size))
                        for e in doc.ents
                    )
                )
                runs.setdefault(name, []).append(seconds)
                f1[name] = exact_f1(set(found), gold)
    finally:
        shim._model = fp32
    for name in models:
        seconds = runs[name]
        print(
            f"   {name}: {n_words / statistics.median(seconds):,.0f} words/s (passes "
            f"{', '.join(f'{s:.1f}' for s in seconds)} s), exact-span F1 {100 * f1[name]:.2f}"
        )


def nested_part(hf_model, tokenizer, texts, lengths, batch_size, max_batch_items, timed):
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(hf_model, add_pooling_layer=False).eval()
    encoder = nested_encoder(bert)

    def tokenized(groups):
        return [
            tokenizer([texts[i] for i in group], padding=True, return_tensors="pt")
            for group in groups
        ]

    unsorted = tokenized(
        [list(range(i, min(i + batch_size, len(texts)))) for i in range(0, len(texts), batch_size)]
    )
    sorted_subs = tokenized(sub_batches(lengths, batch_size, max_batch_items))
    with torch.inference_mode():
        check = unsorted[0]
        mask = check["attention_mask"].bool()
        diff = (
            (nested_forward(bert, encoder, **check)[mask] - bert(**check).last_hidden_state[mask])
            .abs()
            .max()
        )
        systems = {
            f"BertModel, unsorted batches of {batch_size} (the HF pipeline)": lambda: [
                bert(**b) for b in unsorted
            ],
            f"BertModel, sorted sub-batches of <= {max_batch_items} words (nlp.pipe)": lambda: [
                bert(**b) for b in sorted_subs
            ],
            f"nested tensors, unsorted batches of {batch_size}": lambda: [
                nested_forward(bert, encoder, **b) for b in unsorted
            ],
            f"nested tensors, sorted sub-batches of <= {max_batch_items} words": lambda: [
                nested_forward(bert, encoder, **b) for b in sorted_subs
            ],
        }
        runs = {}
        for _ in range(3):
            for name, fn in systems.items():
                runs.setdefault(name, []).append(timed(fn))
    print(
        "\n6. the encoder alone (median of 3 passes; "
        f"nested against BertModel: max abs difference {diff:.1e})"
    )
    first = statistics.median(next(iter(runs.values())))
    for name, seconds in runs.items():
        median = statistics.median(seconds)
        print(
            f"   {name}: {median:.1f} s, the HF pipeline's batches take {first / median:.2f}x this "
            f"(passes {', '.join(f'{s:.1f}' for s in seconds)} s)"
        )


if __name__ == "__main__":
    typer.run(main)
