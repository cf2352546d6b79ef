"""Tokenisation with a Hugging Face fast WordPiece tokenizer: ``[CLS] ... [SEP]``, 20 tokens."""

from __future__ import annotations

import re
from pathlib import Path

MAX_TOKENS = 20


def load_tokenizer(name_or_path: str | Path):
    """A vocab.txt file, a folder holding one, a saved tokenizer folder, or a hub name
    (``bert-base-uncased`` for real runs; nothing is downloaded for local paths)."""
    from transformers import AutoTokenizer

    path = Path(name_or_path)
    if path.is_file():
        return _from_vocab(path)
    if path.is_dir():
        if (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists():
            return AutoTokenizer.from_pretrained(str(path))
        if (path / "vocab.txt").exists():
            return _from_vocab(path / "vocab.txt")
        raise FileNotFoundError(f"{path}: no vocab.txt or tokenizer files")
    name = str(name_or_path)
    if not re.fullmatch(r"[\w-][\w.-]*(/[\w.-]+)?", name) or name.endswith((".txt", ".json")):
        raise FileNotFoundError(f"{name}: no such tokenizer file or directory")  # a path, not a hub id
    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as exc:  # offline, unknown id: one clear line
        raise FileNotFoundError(f"{name}: not a local tokenizer, and the Hugging Face hub did not provide it "
                                f"({type(exc).__name__})") from None


def _from_vocab(vocab: Path):
    """A lower-casing WordPiece tokenizer over a vocab.txt (transformers 4 and 5 name the argument differently)."""
    import inspect

    from transformers import BertTokenizerFast

    arg = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
    return BertTokenizerFast(**{arg: str(vocab)}, do_lower_case=True)


def encode(tokenizer, sentence: str, max_tokens: int = MAX_TOKENS) -> list[int]:
    """Token ids of ``[CLS] sentence [SEP]``, truncated to ``max_tokens``."""
    return tokenizer(sentence, truncation=True, max_length=max_tokens)["input_ids"]
