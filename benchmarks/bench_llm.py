"""A fine-tuned generative LLM as a peer of the pipelines: the public QLoRA recipe for
Llama-2-7B on MultiNERD (benchmarks/llm_recipe.cfg), run on the project's splits and scored
like the pipelines.

It writes one instruction row a training sentence of assets/<language>_<dataset>/ under the system's
label scheme (benchmarks/llm_format.py), fine-tunes a causal LM with LoRA on the attention's
linear layers (peft) - on a GPU over a 4-bit base (QLoRA, bitsandbytes), on the CPU in
float32 (plain LoRA) - generates greedily for every test sentence, reads each generation
into one tag a gold token (what cannot be read counts against it, and is counted) and scores
the entities with spaCy's NER scorer, as `spacy evaluate` does. Writes the scores under
`spacy evaluate`'s keys, with the training time, generation words/s, peak memory and the
share of unreadable generations beside them, and prints them beside the pipeline's
figures for the same split where `evaluate` wrote them.

    python -m benchmarks.bench_llm conll2003 --system a --llm tiny --gpu-id -1
    python -m benchmarks.bench_llm multinerd --system b --gpu-id 0   # Llama-2-7B, QLoRA
"""

import importlib.util
import json
import random
import resource
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import typer
from wasabi import msg

from scripts.labels import DATASETS, SCHEMES, SPLITS, corpus_name, data_name

from .common import CORPUS_STEP, ROOT, require_inputs
from .llm_format import (
    Prompt,
    load_recipe,
    prompt_of,
    read_generation,
    scheme_tags,
    score,
    unreadable,
)

TINY = "tiny"  # the tiny random model built here (scripts/tiny_transformer.py)
# The recipe's base model: Meta's Llama-2-7B as NousResearch publishes it on the hub, with
# no sign-up (meta-llama/Llama-2-7b-hf is the same model, gated: accept Meta's licence on
# its page first). Either way the Llama 2 Community License applies.
DEFAULT_LLM = "NousResearch/Llama-2-7b-hf"
GPU_REQUIREMENTS = "requirements-bench-gpu.txt"


def load_splits(assets: Path, dataset: str, system: str):
    """The labels of `system` on `dataset`, and (tokens, tags) of the train and test splits
    under its scheme. Stops with the first bad sentence's file and line."""
    from scripts.convert import dataset_types
    from scripts.corpus import DataError, EncodedSplit, check_sentences, read_jsonl

    encoded = {}
    try:
        for split in SPLITS:
            sents = read_jsonl(assets / f"{split}.jsonl")
            check_sentences(sents, DATASETS[dataset].types)
            encoded[split] = EncodedSplit.encode(sents)
    except DataError as err:
        sys.exit(str(err))
    labels = SCHEMES[system].keep(dataset_types(dataset, encoded))
    if not labels:
        sys.exit(f"{assets}: System {system.upper()} keeps none of the types of {dataset}.")
    splits = {
        split: (encoded[split].sents.tokens.to_pylist(), scheme_tags(encoded[split], labels))
        for split in ("train", "test")
    }
    return list(labels), splits


def require_gpu(gpu_id: int) -> None:
    """On a GPU: stop with one line unless torch sees GPU `gpu_id` and bitsandbytes is
    installed. On the CPU: say what runs instead of QLoRA."""
    import torch

    if gpu_id < 0:
        msg.info("No GPU (gpu_id -1): QLoRA needs a GPU; this run trains plain LoRA in float32.")
        return
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpu_id >= found:
        sys.exit(
            f"GPU {gpu_id}: torch {torch.__version__} sees {found} CUDA device(s). QLoRA needs a "
            "GPU; --vars.gpu_id=-1 runs plain LoRA in float32 on the CPU."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        sys.exit(
            f"bitsandbytes is not installed: QLoRA's 4-bit base needs it "
            f"(pip install -r {GPU_REQUIREMENTS})."
        )


def gpu_dtype():
    """bfloat16 where the GPU has it (the recipe's), else float16."""
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def load_model(name: str, gpu_id: int, recipe):
    """The tokenizer and the causal LM with the recipe's LoRA adapters: on a GPU over the
    base in 4 bits (QLoRA), on the CPU over the base in float32. Stops with one line when
    the model cannot be loaded."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from scripts.hub import first_line, use_hub_or_cache

    if not Path(name).is_dir():
        use_hub_or_cache()  # without a network: the local cache, at once
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        if gpu_id >= 0:
            quant = recipe["quantization"]
            bnb = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=quant["quant_type"],
                bnb_4bit_use_double_quant=quant["double_quant"],
                bnb_4bit_compute_dtype=gpu_dtype(),
            )
            model = AutoModelForCausalLM.from_pretrained(
                name, quantization_config=bnb, torch_dtype=gpu_dtype(), device_map={"": gpu_id}
            )
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=recipe["training"]["gradient_checkpointing"],
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(name, torch_dtype=torch.float32)
    except (OSError, ValueError) as err:
        sys.exit(
            f"{name}: the model cannot be loaded ({first_line(err)}). Give a hub name or a "
            "local model directory with --vars.llm, or --vars.llm=tiny for the tiny local model."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # as the recipe
    model.config.use_cache = False  # for training; generation turns it on
    lora = recipe["lora"]
    config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return tokenizer, get_peft_model(model, config)


def pack(tokenizer, rows: Sequence[str], length: int, seed: int) -> List[List[int]]:
    """The rows, in a seeded random order, tokenized and concatenated (each has its <s> and
    </s>) and cut into rows of `length` tokens; the tokens after the last full one are left
    out, as the recipe's packing does."""
    order = random.Random(seed).sample(range(len(rows)), len(rows))
    pieces = tokenizer([rows[i] for i in order], add_special_tokens=False)["input_ids"]
    ids = [i for row in pieces for i in row]
    if len(ids) < length:
        sys.exit(
            f"The {len(rows)} training rows make {len(ids)} tokens, fewer than one packed "
            f"row of max_length {length} (benchmarks/llm_recipe.cfg)."
        )
    return [ids[i : i + length] for i in range(0, len(ids) - length + 1, length)]


def train(model, tokenizer, rows: List[str], recipe, gpu_id: int, out: Path) -> Dict:
    """The recipe's fine-tuning with the transformers Trainer: the losses and seconds."""
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    t = recipe["training"]
    blocks = pack(tokenizer, rows, t["max_length"], t["seed"])
    batches = -(-len(blocks) // t["batch_size"])
    steps = -(-batches // t["gradient_accumulation"]) * t["epochs"]
    on_gpu = gpu_id >= 0
    bf16 = on_gpu and dtype_name(gpu_dtype()) == "bfloat16"
    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=t["epochs"],
        per_device_train_batch_size=t["batch_size"],
        gradient_accumulation_steps=t["gradient_accumulation"],
        learning_rate=t["learning_rate"],
        lr_scheduler_type=t["lr_scheduler"],
        max_grad_norm=t["max_grad_norm"],
        optim=t["gpu_optimizer"] if on_gpu else "adamw_torch",
        bf16=bf16,
        fp16=on_gpu and not bf16,
        tf32=True if bf16 else None,  # a GPU with bf16 has TF32
        logging_steps=max(1, steps // 20),
        save_strategy="no",
        report_to=[],
        label_names=["labels"],  # peft's model hides the base model's arguments
        use_cpu=not on_gpu,
        seed=t["seed"],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    losses: List[Tuple[int, float]] = []

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append((state.global_step, logs["loss"]))
                print(f"step {state.global_step}/{state.max_steps}: loss {logs['loss']:.4f}")

    dataset = [{"input_ids": b, "labels": b} for b in blocks]
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=default_data_collator
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(Losses())
    msg.info(
        f"Training on {len(rows):,} rows packed into {len(blocks):,} rows of "
        f"{t['max_length']} tokens: {steps:,} updates"
    )
    start = time.perf_counter()
    trainer.train()
    return {
        "seconds": time.perf_counter() - start,
        "packed_rows": len(blocks),
        "updates": trainer.state.global_step,
        "losses": losses,
    }


def generate(model, tokenizer, prompts: List[str], recipe) -> Tuple[List[str], List[bool], float]:
    """Greedy generations for the prompts, shortest first in batches, and whether each ended
    with the end marker (else max_new_tokens cut it); and the seconds they took."""
    import torch
    from transformers import GenerationConfig

    g = recipe["generation"]
    settings = GenerationConfig(
        max_new_tokens=g["max_new_tokens"],
        do_sample=False,
        num_beams=1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tokenizer.padding_side = "left"
    model.eval()
    model.config.use_cache = True
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts, ended = [""] * len(prompts), [False] * len(prompts)
    start = time.perf_counter()
    with torch.no_grad():
        for b in range(0, len(order), g["batch_size"]):
            batch = order[b : b + g["batch_size"]]
            enc = tokenizer(
                [prompts[i] for i in batch],
                add_special_tokens=False,
                padding=True,
                return_tensors="pt",
            ).to(model.device)
            out = model.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                generation_config=settings,
            )
            for i, new in zip(batch, out[:, enc["input_ids"].shape[1] :].tolist()):
                ended[i] = tokenizer.eos_token_id in new
                if ended[i]:  # what follows is padding
                    new = new[: new.index(tokenizer.eos_token_id)]
                # markup written into the answer (<s>, [INST]) stays: it cannot be read
                texts[i] = tokenizer.decode(new).strip()
    return texts, ended, time.perf_counter() - start


def peak_memory_mib(gpu_id: int) -> Tuple[float, str]:
    """The peak GPU memory torch allocated, or on the CPU the peak resident memory of this
    process; in MiB, and which of the two."""
    if gpu_id >= 0:
        import torch

        return torch.cuda.max_memory_allocated(gpu_id) / 2**20, "GPU"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "RSS"


def pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def comparison(result: Dict, pipeline: Path) -> None:
    """The LLM's figures beside the pipeline's for the same split (metrics/<name>.json)."""
    llm = result["llm"]
    rows = []
    if pipeline.exists():
        p = json.loads(pipeline.read_text(encoding="utf-8"))
        speed = f"{p['speed']:,.0f}" if p.get("speed") else "-"
        scores = [pct(p.get(k)) for k in ("ents_p", "ents_r", "ents_f")]
        rows.append((pipeline.stem, *scores, speed, "-", "-"))
    else:
        msg.info(f"{pipeline}: not found; `spacy project run evaluate` writes the pipeline's.")
    rows.append(
        (
            f"LLM ({llm['model']})",
            pct(result["ents_p"]),
            pct(result["ents_r"]),
            pct(result["ents_f"]),
            f"{result['speed']:,.0f}",
            f"{llm['train']['seconds'] / 60:,.1f} min",
            f"{llm['peak_memory_mib']:,.0f} MiB ({llm['peak_memory']})",
        )
    )
    header = ("test split", "P", "R", "F1", "words/s", "training", "peak memory")
    msg.table(rows, header=header, divider=True)
    if pipeline.exists():
        msg.text(
            "The pipeline's words/s are spacy evaluate's; its training time and memory are not "
            "in its metrics."
        )
    u = llm["unreadable"]
    kinds = ", ".join(f"{n:,} {kind}" for kind, n in u["problems"].items() if n) or "none"
    msg.text(
        f"Generations not read in full: {u['with_problems']:,} of {u['generations']:,} "
        f"({100 * u['share']:.1f}%), {u['nothing_readable']:,} of them wholly; problems: "
        f"{kinds}; {llm['cut_short']:,} cut short at max_new_tokens"
    )
    msg.text(
        f"The gold answers read back score F1 {pct(llm['format_ceiling_f'])}: the most that the "
        "row format allows on this split."
    )


def write_generations(path: Path, tokens, texts, ended, readings) -> None:
    from scripts.corpus import atomic_write

    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for toks, text, end, reading in zip(tokens, texts, ended, readings):
            row = {"tokens": toks, "generation": text, "ended": end}
            row.update(tags=reading.tags, problems=reading.problems)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(
    dataset: str = typer.Argument(..., help=f"One of: {', '.join(DATASETS)}"),
    system: str = typer.Option("a", help=f"The label scheme: {', '.join(SCHEMES)}"),
    llm: str = typer.Option(
        DEFAULT_LLM, help="A causal LM: a hub name, a local model directory, or 'tiny'"
    ),
    gpu_id: int = typer.Option(0, help="GPU for QLoRA; -1: plain LoRA on the CPU"),
    recipe_path: Path = typer.Option(ROOT / "benchmarks" / "llm_recipe.cfg", "--recipe"),
    assets: Optional[Path] = typer.Option(None, help="Default: assets/en_<dataset>"),
    output: Optional[Path] = typer.Option(
        None, help="The scores; default: metrics/<name>_llm.json, <name> en_<dataset>_<system>"
    ),
    pipeline: Optional[Path] = typer.Option(
        None, help="spacy evaluate's figures of the pipeline; default: metrics/<name>_trf.json"
    ),
    run_dir: Optional[Path] = typer.Option(
        None, help="The generations (and the tiny model); default: benchmarks/runs/llm-<name>"
    ),
):
    """Fine-tune a causal LM with the recipe on the system's train split, generate for its
    test split, and score the generations as `spacy evaluate` scores a pipeline."""
    if dataset not in DATASETS:
        raise typer.BadParameter(f"one of {', '.join(DATASETS)}", param_hint="DATASET")
    if system not in SCHEMES:
        raise typer.BadParameter(f"one of {', '.join(SCHEMES)}", param_hint="--system")
    name = corpus_name(dataset, system)
    assets = assets or ROOT / "assets" / data_name(dataset)
    output = output or ROOT / "metrics" / f"{name}_llm.json"
    pipeline = pipeline or ROOT / "metrics" / f"{name}_trf.json"
    run_dir = run_dir or ROOT / "benchmarks" / "runs" / f"llm-{name}"
    require_inputs([assets / f"{split}.jsonl" for split in SPLITS], CORPUS_STEP)
    require_inputs([recipe_path], "Give the recipe with --recipe.")
    require_gpu(gpu_id)
    from scripts.corpus import remove_outputs
    from scripts.tiny_transformer import TINY_LLM_OVERRIDES, build_tiny_causal_lm

    recipe = load_recipe(recipe_path, TINY_LLM_OVERRIDES if llm == TINY else None)
    prompt: Prompt = prompt_of(recipe)
    labels, splits = load_splits(assets, dataset, system)
    (train_tokens, train_tags), (test_tokens, test_tags) = splits["train"], splits["test"]
    rows = [prompt.row(toks, tags) for toks, tags in zip(train_tokens, train_tags)]
    remove_outputs(output, run_dir)
    from transformers import set_seed

    set_seed(recipe["training"]["seed"])  # the tiny model's weights and the LoRA weights
    model_name = llm
    if llm == TINY:
        model_name = str(build_tiny_causal_lm(run_dir / "tiny-llm", rows, prompt.markers()))
    if gpu_id >= 0:
        import torch

        torch.cuda.reset_peak_memory_stats(gpu_id)
    tokenizer, model = load_model(model_name, gpu_id, recipe)
    run_dir.mkdir(parents=True, exist_ok=True)
    trained = train(model, tokenizer, rows, recipe, gpu_id, run_dir)
    msg.good(
        f"Trained {trained['updates']:,} updates in {trained['seconds'] / 60:.1f} min; loss "
        f"{trained['losses'][0][1]:.4f} -> {trained['losses'][-1][1]:.4f}"
    )
    prompts = [prompt.text(toks) for toks in test_tokens]
    texts, ended, seconds = generate(model, tokenizer, prompts, recipe)
    sep = prompt.separator
    readings = [read_generation(t, toks, labels, sep) for t, toks in zip(texts, test_tokens)]
    gold_read = [  # the gold answers, read back: what the row format allows at best
        read_generation(prompt.answer(toks, tags), toks, labels, sep).tags
        for toks, tags in zip(test_tokens, test_tags)
    ]
    words = sum(map(len, test_tokens))
    memory, kind = peak_memory_mib(gpu_id)
    device = (
        f"QLoRA, GPU {gpu_id} ({dtype_name(gpu_dtype())})"
        if gpu_id >= 0
        else "plain LoRA, CPU (float32)"
    )
    result = {
        **score(test_tokens, test_tags, [r.tags for r in readings], labels),
        "speed": words / seconds,
        "llm": {
            "model": "tiny (random, built here)" if llm == TINY else llm,
            "dataset": dataset,
            "system": system,
            "labels": labels,
            "device": device,
            "recipe": {section: dict(values) for section, values in recipe.items()},
            "train_sentences": len(train_tokens),
            "test_sentences": len(test_tokens),
            "test_words": words,
            "train": trained,
            "generation_seconds": seconds,
            "peak_memory_mib": memory,
            "peak_memory": kind,
            "cut_short": ended.count(False),
            "format_ceiling_f": score(test_tokens, test_tags, gold_read, labels)["ents_f"],
            "unreadable": unreadable(readings, texts),
        },
    }
    from scripts.corpus import write_json

    write_generations(run_dir / "generations.jsonl", test_tokens, texts, ended, readings)
    write_json(output, result)
    msg.good(f"Wrote {output} and {run_dir / 'generations.jsonl'}")
    comparison(result, pipeline)


if __name__ == "__main__":
    typer.run(main)
