"""Build a tiny random BERT (2 layers, small vocabulary) with a WordPiece tokenizer trained on
the fixture text, saved as a local Hugging Face model directory: tests need no download."""

import json
from pathlib import Path
from typing import Iterable


def build_tiny_transformer(out_dir: Path, texts: Iterable[str]) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        list(texts), trainers.WordPieceTrainer(vocab_size=400, special_tokens=special)
    )
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (out_dir / "vocab.txt").write_text("".join(f"{w}\n" for w, _ in vocab), encoding="utf-8")
    hf_tok = BertTokenizerFast(vocab_file=str(out_dir / "vocab.txt"), do_lower_case=False)
    hf_tok.save_pretrained(out_dir)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(out_dir)
    return out_dir


def fixture_texts(fixture_dir: Path):
    for path in sorted(Path(fixture_dir).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            yield " ".join(json.loads(line)["tokens"])


# What a tiny random transformer needs to learn the fixture in a few dozen steps on CPU.
TINY_OVERRIDES = {
    "training.optimizer.learn_rate.initial_rate": 0.002,
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
