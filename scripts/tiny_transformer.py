"""Tiny random encoders of every family the project supports, each with a tokenizer of its real
kind trained here on a few texts (WordPiece, byte-level BPE, or a SentencePiece unigram
model) and saved as the family's releases on the Hugging Face Hub save it (DeBERTa's as its
SentencePiece model only, which transformers converts when it loads it), in local model
directories: the tests and gpu-smoke need no download.

    build_tiny_transformer(out_dir, texts, family="deberta-v3")

FAMILIES is also the list of the encoder families the project is tested with: before_train
warns about a transformer of another family, and gpu-smoke builds the user's family.
"""

import importlib.util
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

# tiny: 2 layers of width 32 learn the fixture in a few dozen steps. small (MiniLM's) and base
# (BERT-base's, and DeBERTa-v3-base's, ELECTRA-base's, ...): for speed figures, which do not
# depend on the weights. Each family can adjust a size (Family.sizes).
SIZES = {
    "tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    # all-MiniLM-L6-v2's dimensions (6 layers of 384)
    "small": {
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
    },
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
}
MAX_PIECES = 512  # word pieces a text may have (the model's positions)
# word pieces a tokenizer learns (at most: a few texts give fewer); bpe starts from 256 bytes
VOCAB_SIZE = {
    "tiny": {"wordpiece": 400, "unigram": 400, "bpe": 600},
    "small": dict.fromkeys(("wordpiece", "unigram", "bpe"), 8000),
    "base": dict.fromkeys(("wordpiece", "unigram", "bpe"), 8000),
}


@dataclass(frozen=True)
class Family:
    """An encoder family: its transformers config and tokenizer classes, the kind of tokenizer
    its released models have, and that tokenizer's special tokens (cls, sep, pad, unk, mask)."""

    model_type: str
    config_class: str
    tokenizer_class: str
    tokenizer: str  # wordpiece | bpe | unigram (SentencePiece)
    specials: Tuple[str, str, str, str, str]
    config: Dict = field(default_factory=dict)
    lowercase: bool = False
    input_names: Tuple[str, ...] = ()  # the tokenizer's model_input_names, if not its class's
    sentencepiece: Dict = field(default_factory=dict)  # the SentencePiece model's own ids
    sizes: Dict[str, Dict] = field(default_factory=dict)  # config changes for a size


BERT_SPECIALS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]")
ROBERTA_SPECIALS = ("<s>", "</s>", "<pad>", "<unk>", "<mask>")
# DeBERTa's SentencePiece model holds its special tokens; XLM-R's is fairseq's, whose
# tokenizer adds <s>, <pad>, </s> and <mask> around SentencePiece's own ids.
DEBERTA_SPM = {
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "pad_piece": "[PAD]",
    "bos_piece": "[CLS]",
    "eos_piece": "[SEP]",
    "unk_piece": "[UNK]",
    "user_defined_symbols": ["[MASK]"],
}
DEBERTA = {
    "relative_attention": True,
    "position_buckets": 64,
    "norm_rel_ebd": "layer_norm",
    "share_att_key": True,
    "pos_att_type": ["p2c", "c2p"],
    "position_biased_input": False,
    "max_relative_positions": -1,
    "type_vocab_size": 0,
}

FAMILIES: Dict[str, Family] = {
    "bert": Family("bert", "BertConfig", "BertTokenizerFast", "wordpiece", BERT_SPECIALS),
    "bert-uncased": Family(
        "bert", "BertConfig", "BertTokenizerFast", "wordpiece", BERT_SPECIALS, lowercase=True
    ),
    "roberta": Family(
        "roberta", "RobertaConfig", "RobertaTokenizerFast", "bpe", ROBERTA_SPECIALS, {"offset": 2}
    ),
    "xlm-roberta": Family(
        "xlm-roberta",
        "XLMRobertaConfig",
        "XLMRobertaTokenizerFast",
        "unigram",
        ROBERTA_SPECIALS,
        {"offset": 2},
    ),
    "distilbert": Family(
        "distilbert",
        "DistilBertConfig",
        "DistilBertTokenizerFast",
        "wordpiece",
        BERT_SPECIALS,
        {"hidden_dim": 64},  # its names for the sizes: dim (hidden_size), ...
        lowercase=True,
        sizes={"base": {"hidden_dim": 3072, "num_hidden_layers": 6}},
    ),
    "electra": Family(
        "electra",
        "ElectraConfig",
        "ElectraTokenizerFast",
        "wordpiece",
        BERT_SPECIALS,
        {"embedding_size": 16},  # smaller than the hidden size, as in ELECTRA's releases
        lowercase=True,
        sizes={"base": {"embedding_size": 768}},
    ),
    "mpnet": Family(
        "mpnet",
        "MPNetConfig",
        "MPNetTokenizerFast",
        "wordpiece",
        ("<s>", "</s>", "<pad>", "[UNK]", "<mask>"),
        # MPNetConfig's default eps is 1e-12, its releases' 1e-5
        {"offset": 2, "relative_attention_num_buckets": 32, "layer_norm_eps": 1e-5},
        lowercase=True,
    ),
    "deberta-v2": Family(
        "deberta-v2",
        "DebertaV2Config",
        "DebertaV2Tokenizer",  # released as spm.model only
        "unigram",
        BERT_SPECIALS,
        {**DEBERTA, "conv_kernel_size": 3, "conv_act": "gelu"},
        sentencepiece=DEBERTA_SPM,
        sizes={"base": {"position_buckets": 256}},
    ),
    "deberta-v3": Family(
        "deberta-v2",
        "DebertaV2Config",
        "DebertaV2Tokenizer",
        "unigram",
        BERT_SPECIALS,
        DEBERTA,
        sentencepiece=DEBERTA_SPM,
        sizes={"base": {"position_buckets": 256}},
    ),
    "modernbert": Family(
        "modernbert",
        "ModernBertConfig",
        "PreTrainedTokenizerFast",
        "bpe",
        BERT_SPECIALS,
        {"global_attn_every_n_layers": 2, "local_attention": 16},
        input_names=("input_ids", "attention_mask"),
        sizes={"base": {"global_attn_every_n_layers": 3, "local_attention": 128}},
    ),
}

if importlib.util.find_spec("transformers.models.modernbert") is None:  # transformers < 4.48
    del FAMILIES["modernbert"]


def family_of(config: Dict) -> Optional[str]:
    """The family of FAMILIES that a model's config.json describes; None if untested."""
    model_type = config.get("model_type")
    if model_type == "deberta-v2":  # DeBERTa-v3 has the v2 architecture, without its conv
        return "deberta-v2" if config.get("conv_kernel_size") else "deberta-v3"
    return model_type if model_type in FAMILIES else None


def train_tokenizer(family: Family, texts: List[str], vocab: int):
    """A `tokenizers` Tokenizer of the family's kind (WordPiece or byte-level BPE), trained on
    `texts`, that adds the family's cls and sep tokens around a text."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    cls, sep, _, unk, _ = family.specials
    if family.tokenizer == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=unk))
        tok.normalizer = normalizers.BertNormalizer(lowercase=family.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=list(family.specials))
    else:  # byte-level, as GPT-2, RoBERTa and ModernBERT
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=list(family.specials),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    tok.train_from_iterator(texts, trainer)
    ids = [(t, tok.token_to_id(t)) for t in (cls, sep)]
    if family.tokenizer == "bpe" and family.model_type != "modernbert":
        tok.post_processor = processors.RobertaProcessing(sep=ids[1], cls=ids[0])
    else:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1", special_tokens=ids
        )
    return tok


def train_sentencepiece(family: Family, texts: List[str], path: Path, vocab: int) -> Path:
    """A SentencePiece unigram model trained on `texts`, written to `path`."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab,
        hard_vocab_limit=False,  # as many pieces as a few texts give
        minloglevel=2,
        **family.sentencepiece,
    )
    path.write_bytes(model.getvalue())
    return path


def build_tiny_transformer(
    out_dir: Path,
    texts: Iterable[str],
    family: str = "bert",
    size: str = "tiny",
    vocab: Optional[int] = None,
) -> Path:
    """A random encoder of `family` (a key of FAMILIES) and `size` (of SIZES), and its
    tokenizer, trained on `texts` with at most `vocab` word pieces (default: the size's,
    VOCAB_SIZE), saved in `out_dir`: what `AutoModel` and `AutoTokenizer` `.from_pretrained`
    read."""
    import transformers

    spec = FAMILIES[family]
    texts = list(texts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cls, sep, pad, unk, mask = spec.specials
    vocab = vocab or VOCAB_SIZE[size][spec.tokenizer]
    settings = {"model_max_length": MAX_PIECES, "do_lower_case": spec.lowercase}
    if spec.input_names:
        settings["model_input_names"] = list(spec.input_names)
    if spec.tokenizer == "unigram":
        model_file = train_sentencepiece(spec, texts, out_dir / "sentencepiece.model", vocab)
        settings["vocab_file"] = str(model_file)
    else:
        settings.update(tokenizer_object=train_tokenizer(spec, texts, vocab), bos_token=cls)
        settings.update(cls_token=cls, sep_token=sep, pad_token=pad, unk_token=unk)
        settings.update(mask_token=mask, eos_token=sep)
    tokenizer = getattr(transformers, spec.tokenizer_class)(**settings)
    tokenizer.save_pretrained(out_dir)  # under the family's own file names
    if spec.tokenizer == "unigram":
        model_file.unlink()
    dims = {**spec.config, **SIZES[size], **spec.sizes.get(size, {})}
    config = getattr(transformers, spec.config_class)(
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_PIECES + dims.pop("offset", 0),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        **dims,
    )
    transformers.AutoModel.from_config(config).save_pretrained(out_dir)
    return out_dir


def fixture_texts(fixture_dir: Path):
    for path in sorted(Path(fixture_dir).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            yield " ".join(json.loads(line)["tokens"])


# What a tiny random transformer needs to learn the fixture in a few dozen steps on CPU.
TINY_OVERRIDES = {
    "training.optimizer.learn_rate.initial_rate": 0.005,
    "training.optimizer.learn_rate.warmup_steps": 10,
    "training.batcher.size": 300,
    "training.accumulate_gradient": 1,
}


def write_tiny_config(src: Path, dst: Path) -> Path:
    """configs/trf.cfg with TINY_OVERRIDES: the same pipeline, settings for a tiny model."""
    from spacy.util import load_config

    config = load_config(src, overrides=TINY_OVERRIDES, interpolate=False)
    config.to_disk(dst)
    return dst


# --- a tiny random causal LM (bench-llm's llm=tiny) ----------------------------------------
LLM_SPECIALS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}  # Llama's
LLM_POSITIONS = 1024  # a prompt and its answer, in the tiny tokenizer's short pieces
# weights 5x larger than Llama's 0.02: the frozen random model's logits then spread enough for
# LoRA on its attention alone to lower the loss in a few updates
LLM_INIT = 0.1


def build_tiny_causal_lm(
    out_dir: Path, texts: Iterable[str], markers: Iterable[str] = (), size: str = "tiny"
) -> Path:
    """A random causal LM of Llama's architecture and `size` (of SIZES), with a byte-level BPE
    tokenizer trained on `texts` that has Llama's <s>, </s> and <unk> and keeps each of
    `markers` (a prompt's [INST], [/INST]) one token, saved in `out_dir`: what
    `AutoModelForCausalLM` and `AutoTokenizer` `.from_pretrained` read."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = list(LLM_SPECIALS.values())
    extra = [m for m in dict.fromkeys(markers) if m not in specials]
    tok = Tokenizer(models.BPE(unk_token=LLM_SPECIALS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE[size]["bpe"],
        special_tokens=specials + extra,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )

    def plain(text: str) -> str:  # the pieces are learnt from the text between the markup
        for mark in specials + extra:
            text = text.replace(mark, " ")
        return text

    tok.train_from_iterator((plain(t) for t in texts), trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=LLM_POSITIONS,
        model_input_names=["input_ids", "attention_mask"],  # as Llama's
        **LLM_SPECIALS,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    dims = SIZES[size]
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=dims["num_attention_heads"],
        max_position_embeddings=LLM_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=LLM_INIT,
        **dims,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir


# The recipe's numbers that a tiny random model cannot learn with (benchmarks/llm_recipe.cfg):
# a rank below its width, a higher learning rate, updates of 8 short packed rows, and answers
# cut short sooner (a random model rarely ends one). Everything else is the recipe's.
TINY_LLM_OVERRIDES = {
    "lora.r": 8,
    "lora.alpha": 16,
    "training.learning_rate": 0.02,
    "training.gradient_accumulation": 1,
    "training.max_length": 128,
    "generation.max_new_tokens": 48,
    "generation.batch_size": 32,
}
