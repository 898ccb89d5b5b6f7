"""The smoke profile's model: a tiny Llama with random weights and a byte-level tokenizer, built
locally in code and seeded, so two builds give byte-identical files. Its outputs mean nothing."""
from __future__ import annotations

from pathlib import Path

from .cache import BUILD_VERSION, finish


TINY_SPECIALS = ("<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
#: Each turn is '<|role|>\n{content}<|end|>\n'; the generation prompt adds '<|assistant|>\n', so
#: the end-of-instruction tokens after the user text are '<|end|>', '\n', '<|assistant|>', '\n'.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles must be system, user or assistant') }}{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")


def tiny_recipe() -> dict:
    """Everything that determines the tiny model's files (its hash names the cache folder)."""
    return {"build_version": BUILD_VERSION, "seed": 0, "specials": TINY_SPECIALS, "template": TINY_CHAT_TEMPLATE,
            "config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096},
            "init": "embeddings N(0,1); linear N(0,1/fan_in); norms 1; in sorted name order"}


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255, in byte order."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def tiny_tokenizer():
    """A byte-level tokenizer (every byte one token, ids after the specials), built in code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(TINY_SPECIALS + tuple(_bytes_to_unicode()))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(list(TINY_SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="<|end|>",
                                   pad_token="<pad>", chat_template=TINY_CHAT_TEMPLATE, padding_side="left")


def build_tiny(out: Path, name: str) -> None:
    """Seeded weights drawn in a fixed order, so two builds give byte-identical files."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    recipe = tiny_recipe()
    tok = tiny_tokenizer()
    end = tok.convert_tokens_to_ids("<|end|>")
    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=end,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **recipe["config"])
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(recipe["seed"])
    with torch.no_grad():
        for pname, p in sorted(model.named_parameters()):
            if pname.endswith("norm.weight"):
                p.fill_(1.0)
            elif "embed_tokens" in pname:
                p.normal_(0.0, 1.0, generator=gen)
            else:
                p.normal_(0.0, p.shape[-1] ** -0.5, generator=gen)
    model.generation_config.eos_token_id = end
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    finish(out, f"local:{name}", recipe=recipe)
