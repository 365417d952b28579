"""Small real inputs for finetuning tests: tiny BERT and Llama models built from configs (with a
word-level vocabulary from the comments), and a few dozen real YouTube comments as a dataset
version labelled by the project's own label-model workflow."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import transformers

from fmforge.data import add_dataset
from fmforge.data.labeling.functions import apply_lfs, load_lfs
from fmforge.data.labeling.workflow import label_version
from fmforge.models import commit_model
from fmforge.repository import Repository

DEMO = Path(__file__).resolve().parents[1] / "src" / "fmforge" / "demo_data"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def comments(train: int = 32, valid: int = 8, test: int = 12) -> list[dict[str, object]]:
    """Real comments from the demo's YouTube file, with train/valid/test splits."""
    rows = [json.loads(line) for line in (DEMO / "youtube_spam.jsonl").read_text().splitlines()]
    trains = [r for r in rows if r["split"] == "train"]
    tests = [r for r in rows if r["split"] == "test"]
    out = [{**r, "split": "train"} for r in trains[:train]]
    out += [{**r, "split": "valid"} for r in trains[train : train + valid]]
    out += [{**r, "split": "test"} for r in tests[:test]]
    return out


def _vocabulary() -> list[str]:
    words: set[str] = set()
    for line in (DEMO / "youtube_spam.jsonl").read_text().splitlines():
        words.update(re.findall(r"[a-z0-9]+", json.loads(line)["text"].lower()))
    return SPECIAL + sorted(words)[:1500]


def _tokenizer(directory: Path) -> transformers.PreTrainedTokenizerFast:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(_vocabulary()) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_bert(directory: Path, seed: int = 0) -> Path:
    tokenizer = _tokenizer(directory)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )  # fmt: skip
    torch.manual_seed(seed)
    transformers.BertModel(config).save_pretrained(directory)
    return directory


def tiny_llama(directory: Path, seed: int = 0) -> Path:
    tokenizer = _tokenizer(directory)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=2, eos_token_id=3,
    )  # fmt: skip
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def spam_repository(root: Path, bert: Path, llama: Path | None = None) -> Repository:
    """A repository at ``root`` with model ``tiny`` (the BERT at ``bert``; and ``tiny-lm``, the
    Llama at ``llama``) and dataset ``spam``: v1 the comments (gold ``label`` 0 = ham,
    1 = spam; splits train, valid, test), v2 with the label model's ``weak_label`` and
    ``weak_label_proba`` (the demo's LFs)."""
    root.mkdir(parents=True, exist_ok=True)
    repo = Repository.init(root)
    commit_model(repo, "tiny", bert, "a tiny BERT from a config")
    if llama is not None:
        commit_model(repo, "tiny-lm", llama, "a tiny Llama")
    source = root / "spam.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in comments()))
    add_dataset(repo, "spam", source)
    source.unlink()
    matrix = apply_lfs(repo, "spam", load_lfs(DEMO / "spam_lfs.yaml"), workers=1)
    label_version(repo, matrix)
    return repo
