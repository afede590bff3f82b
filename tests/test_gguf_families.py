"""GGUF export for every family it converts: a tiny random-init model of each (float16, as a
merge writes it, with the demo's byte-level BPE tokenizer), converted by
trainers/tools/gguf_export.py, loaded back by transformers (`gguf_file=`: the same weights and
logits) and by llama.cpp (llama-cpp-python: the same token ids for the prompt and for the 1060
bundled texts that do not hold the literal text "<|endoftext|>", which llama.cpp takes for its
end-of-text token; logits within 1% of the largest; the same next token at every position).
Also a Llama with Llama 3's rope scaling (llama.cpp's rope_freqs tensor), a Gemma 3 with one
sliding-window and one global layer (their two rope bases), and a Llama and a Gemma 2 with a
SentencePiece-style tokenizer (byte fallback, with and without a "▁" before the text).
Transformers' GGUF loader reads neither rope_freqs nor Gemma 3's layer pattern: for those two
its weights are compared, not its logits.

Measured: llama.cpp's logits differ from transformers' by at most 0.014 (Llama, Mistral), 0.020
(Llama, SentencePiece-style), 0.019 (Llama 3 rope), 0.023 (Qwen2), 0.010 (Qwen3), 0.023 (Gemma
2), 0.033 (Gemma 2, SentencePiece-style), 0.007 (Gemma 3) and 0.016 (Phi-3), the largest logit
being 6.6 to 10.5: llama.cpp's float16 rounding of the activations. Without Gemma 2's norm
shift the difference was 9.4 (the next token agreed at 0 of 26 positions), without Llama's q/k
permutation 8.8 (1 of 26), with rope_freqs all ones 8.4 (5 of 26), without Gemma 3's layer
pattern 1.6; with gguf's -1000 for every SentencePiece-style token (no merge scores) llama.cpp
tokenized 155 of 201 texts differently, and with a "▁" before Gemma's text the Gemma case
fails.

The families ModelForge trains and the export refuses (Gemma 1, the multimodal Gemma 3, Phi-2)
are refused with the reason: test_gguf_export.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainers.tools.demo import _sample_texts

PROMPT = "<|user|>\nGive three tips for staying healthy.</s>\n<|assistant|>\n"
# Small shapes; Qwen3's and Gemma 2's head_dim are their configs' defaults (128, 256) because
# transformers' GGUF loader does not read a head_dim that differs from hidden/heads for them.
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
SHAPES = {"llama": dict(num_attention_heads=4, num_key_value_heads=2),
          # a SentencePiece-style tokenizer (byte fallback, "▁" for spaces) as Llama 2, Mistral,
          # Gemma and Phi-3 have: llama.cpp's "llama" tokenizer, not the demo's byte-level BPE
          "llama-sentencepiece": dict(num_attention_heads=4, num_key_value_heads=2),
          # Llama 3's rope scaling (llama.cpp's rope_freqs tensor), its short original context
          # making it change the rotation of most dimensions within the prompt
          "llama3": dict(num_attention_heads=4, num_key_value_heads=2,
                         rope_parameters=LLAMA3_ROPE),
          "mistral": dict(num_attention_heads=4, num_key_value_heads=2),
          "qwen2": dict(num_attention_heads=4, num_key_value_heads=2),
          "qwen3": dict(num_attention_heads=2, num_key_value_heads=1, head_dim=128),
          "gemma2": dict(num_attention_heads=2, num_key_value_heads=1, head_dim=256),
          # Gemma's SentencePiece-style tokenizer puts no "▁" before the text
          "gemma2-sentencepiece": dict(num_attention_heads=2, num_key_value_heads=1,
                                       head_dim=256),
          # one sliding-window layer (rope base 10000) and one global (1e6), as Gemma 3 mixes them
          "gemma3_text": dict(num_attention_heads=2, num_key_value_heads=1, head_dim=256,
                              layer_types=["sliding_attention", "full_attention"]),
          "phi3": dict(num_attention_heads=4, num_key_value_heads=2)}


# What transformers' GGUF loader leaves out for a case (its logits are then not compared; the
# weights are): llama.cpp reads both.
TRANSFORMERS_DOES_NOT_READ = {
    "llama3": "the rope_freqs tensor",
    "gemma3_text": "the layer pattern (it assumes Gemma 3's five sliding layers to one global)"}


def family_of(case: str) -> str:
    return case.split("-")[0].replace("llama3", "llama")


def sentencepiece_style_tokenizer(space_prefix: bool):
    """A BPE with byte fallback and "▁" for spaces, trained on the bundled texts, in the
    layout of Llama 2's tokenizer.json (with a "▁" before the text) or Gemma's (without)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from trainers.tools.demo import _sample_texts

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁")] * space_prefix +
                                          [normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()] + [decoders.Strip(" ", 1, 0)] * space_prefix)
    special = ["<unk>", "<s>", "</s>"]
    tok.train_from_iterator(_sample_texts(), trainer=trainers.BpeTrainer(
        vocab_size=1024, special_tokens=special + [f"<0x{i:02X}>" for i in range(256)]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[
        ("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<unk>")


def tiny_model(case: str, out: Path, tokenizer) -> Path:
    """A random-init model of the family saved in float16 with the tokenizer; its norm weights
    moved off their init (ones, or Gemma's zeros) so that a wrong norm conversion shows."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        family_of(case), vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, max_position_embeddings=512,
        initializer_range=0.2, **SHAPES[case])
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if name.endswith("norm.weight"):
                weight.add_(0.1 * torch.randn_like(weight))
    model.to(torch.float16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("case", [
    "llama",
    # fast guard: test_llama_cpp_reads_the_export_as_transformers_does[llama]
    *(pytest.param(name, marks=pytest.mark.slow) for name in list(SHAPES)[1:])])
def test_llama_cpp_reads_the_export_as_transformers_does(case, demo_model, tmp_path):
    import numpy as np
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.tools.gguf_export import FAMILIES, write_gguf

    tokenizer = sentencepiece_style_tokenizer(case.startswith("llama")) \
        if case.endswith("sentencepiece") else \
        AutoTokenizer.from_pretrained(demo_model)
    model_dir = tiny_model(case, tmp_path / case, tokenizer)
    path = tmp_path / "gguf" / "tiny-f16.gguf"  # a folder of its own: transformers reads the
    path.parent.mkdir()                          # config there from the GGUF, not config.json
    facts = write_gguf(model_dir, path, "f16", "tiny")
    assert facts["architecture"] == FAMILIES[family_of(case)][0].lower()

    ids = tokenizer(PROMPT).input_ids
    want = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                  dtype=torch.float32)
    weights = loaded.state_dict()
    for name, tensor in want.state_dict().items():  # Gemma's norms: + 1 - 1 in float32
        assert torch.allclose(weights[name], tensor, atol=1e-6), name
    with torch.no_grad():
        logits = want(torch.tensor([ids])).logits[0].numpy()
        if case not in TRANSFORMERS_DOES_NOT_READ:
            assert np.allclose(loaded(torch.tensor([ids])).logits[0].numpy(), logits, atol=1e-5)

    llm = Llama(model_path=str(path), n_ctx=128, n_threads=2, logits_all=True, verbose=False)
    try:
        assert llm.tokenize(PROMPT.encode(), add_bos=True, special=True) == ids
        texts = [text for text in _sample_texts() if "<|endoftext|>" not in text]
        assert [llm.tokenize(text.encode(), add_bos=True, special=True) for text in texts] == \
            tokenizer(texts).input_ids
        llm.eval(ids)
        got = np.array(llm.scores[:len(ids)])
    finally:
        llm.close()
    print(f"{case}: llama.cpp's logits within {np.abs(got - logits).max():.4f} of "
          f"transformers', the largest {np.abs(logits).max():.2f}")
    assert np.abs(got - logits).max() <= 0.01 * np.abs(logits).max()
    assert got.argmax(-1).tolist() == logits.argmax(-1).tolist()
