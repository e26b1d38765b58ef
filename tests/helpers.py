"""Tiny models and tokenizers for tests (CPU, seconds, no downloads)."""

from __future__ import annotations

import torch

TINY_WORDS = 96
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def make_tiny_tokenizer(chat_template: str | None = TINY_CHAT_TEMPLATE):
    """A word-level HF tokenizer: specials + w0..w95 + role tags; BOS prepended on encode."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "</s>", "<unk>", "<system>", "<user>", "<assistant>"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(TINY_WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


TINY_VOCAB = 7 + TINY_WORDS  # = len(make_tiny_tokenizer())


def make_tiny_model(seed: int, vocab_size: int = TINY_VOCAB, layers: int = 2, hidden: int = 32):
    """A random-init Llama causal LM from a config (eval mode)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return AutoModelForCausalLM.from_config(cfg).eval()


