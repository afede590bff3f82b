"""A merged model directory as one GGUF file (llama.cpp, Ollama, LM Studio), with an Ollama
Modelfile beside it.

The parts are the `gguf` package's (llama.cpp's own Python library): its writer, its
HF-to-GGUF tensor-name maps (TensorNameMap), its vocabulary readers (BpeVocab, LlamaHfVocab,
SpecialVocab for merges, special ids and the chat template) and its numpy quantisers. What is
written here is what llama.cpp's convert_hf_to_gguf.py adds on top for the families ModelForge
exports: each family's hyper-parameters, Llama's rotary permutation of q/k, Llama 3's
rope_freqs, Gemma's norm weights shifted by one, and which tensors keep 32 bits. A family
not in FAMILIES (REFUSED says why for the ones ModelForge trains) is refused before anything
is loaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from trainers.errors import ModelForgeError

# name -> (the gguf quantisation, llama.cpp's file type). The quantisers are gguf's numpy ones.
GGUF_TYPES = {"f16": ("F16", "MOSTLY_F16"), "bf16": ("BF16", "MOSTLY_BF16"),
              "q8_0": ("Q8_0", "MOSTLY_Q8_0"), "q5_1": ("Q5_1", "MOSTLY_Q5_1"),
              "q5_0": ("Q5_0", "MOSTLY_Q5_0"), "q4_1": ("Q4_1", "MOSTLY_Q4_1"),
              "q4_0": ("Q4_0", "MOSTLY_Q4_0")}
# transformers' model_type -> (llama.cpp's architecture, whether q/k are permuted for its rope).
# Phi-3 keeps its fused qkv_proj and gate_up_proj: llama.cpp's PHI3 reads them fused.
FAMILIES = {"llama": ("LLAMA", True), "mistral": ("LLAMA", True), "qwen2": ("QWEN2", False),
            "qwen3": ("QWEN3", False), "gemma2": ("GEMMA2", False),
            "gemma3_text": ("GEMMA3", False), "phi3": ("PHI3", False)}
# The families ModelForge trains that the export refuses, and why.
REFUSED = {
    "gemma": "Gemma 1 is not converted here: transformers' GGUF loader, which checks every "
             "exported family, does not read it",
    "gemma3": "the multimodal Gemma 3 (with its vision tower) is not converted here; the "
              "text-only Gemma 3 (gemma3_text, Gemma3ForCausalLM) is",
    "phi": "Phi-2's LayerNorm with biases and partial rotary embedding (llama.cpp's PHI2) are "
           "not converted here, and transformers' GGUF loader does not read it",
}
# Gemma's RMSNorm scales by 1 + weight (Gemma 3's q/k norms too); llama.cpp's by the weight
NORM_SHIFTED = ("gemma2", "gemma3_text")
# Pre-tokenizer regexes llama.cpp names (tokenizer.ggml.pre); any other reads as "default".
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| "
                 r"?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {_LLAMA3_REGEX: "llama-bpe",
                  _LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}"): "qwen2"}


class GGUFExportError(ModelForgeError):
    error_type = "export"


CONVERT_IT = ("export the merged model (16-bit, without --gguf) and convert it with llama.cpp's "
              "convert_hf_to_gguf.py")


def check_family(config: dict) -> str:
    """The model's family, or GGUFExportError naming the ones the converter knows; also what
    the family's llama.cpp architecture cannot hold (a rope scaling, a Gemma setting)."""
    family = config.get("model_type", "")
    if family not in FAMILIES:
        reason = f": {REFUSED[family]}" if family in REFUSED else ""
        raise GGUFExportError(
            f"GGUF export does not know the {family or 'unnamed'} family "
            f"({', '.join(config.get('architectures') or []) or 'no architecture'}){reason}.",
            f"It exports {', '.join(FAMILIES)} models; for this one, {CONVERT_IT}.")
    kinds = {_rope(config).get("rope_type", "default")}
    if family == "gemma3_text":  # its local layers' rope: a base of its own, never scaled
        kinds.add("local " + _local_rope(config).get("rope_type", "default"))
    for kind in kinds - {"default", "linear", "local default"}:
        if kind != "llama3" or FAMILIES[family][0] != "LLAMA":
            raise GGUFExportError(f"GGUF export does not convert the rope scaling {kind!r} of "
                                  f"this {family} model.", f"For this one, {CONVERT_IT}.")
    if family in NORM_SHIFTED:
        _check_gemma(config, family)
    return family


def _check_gemma(config: dict, family: str) -> None:
    """What llama.cpp's GEMMA2 and GEMMA3 assume: Gemma 2's logits soft-capped and Gemma 3's
    attention not, the output tied to the embedding, queries scaled by 1/sqrt(head_dim) (or
    by the 27B model's hidden/heads)."""
    name, arch = ("Gemma 2", "GEMMA2") if family == "gemma2" else ("Gemma 3", "GEMMA3")
    problem = None
    if family == "gemma2" and (config.get("attn_logit_softcapping") is None or
                               config.get("final_logit_softcapping") is None):
        problem = "without logit soft-capping (llama.cpp's GEMMA2 always caps)"
    elif family == "gemma3_text" and config.get("attn_logit_softcapping") is not None:
        problem = "with attention soft-capping (llama.cpp's GEMMA3 has none)"
    elif not config.get("tie_word_embeddings", True):
        problem = f"with an output layer of its own (llama.cpp's {arch} reuses the embedding)"
    else:
        scalar = config.get("query_pre_attn_scalar")
        heads = config["num_attention_heads"]
        # llama.cpp's test for the 27B models, which scale by hidden/heads
        big = config["num_hidden_layers"] == (46 if family == "gemma2" else 62)
        if scalar != (config["hidden_size"] // heads if big else _head_dim(config)):
            problem = (f"with query_pre_attn_scalar {scalar} (llama.cpp's {arch} scales by "
                       f"head_dim {_head_dim(config)})")
    if problem:
        raise GGUFExportError(f"GGUF export does not convert a {name} model {problem}.",
                              f"For this one, {CONVERT_IT}.")


def check_type(name: str) -> str:
    if name not in GGUF_TYPES:
        raise GGUFExportError(f"Unknown GGUF type {name!r}.",
                              f"Use one of {', '.join(GGUF_TYPES)}; for a k-quant (q4_k_m and "
                              "kin), export f16 and run llama.cpp's llama-quantize on it.")
    return name


def write_gguf(model_dir: Path, out_path: Path, gguf_type: str, name: str) -> dict:
    """Convert model_dir (a merged, 16-bit Hugging Face model) into out_path; return facts for
    the caller's messages: the architecture, tensors per type, the pre-tokenizer."""
    import gguf

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    family = check_family(config)
    arch_name, permute_qk = FAMILIES[family]
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    writer = gguf.GGUFWriter(str(out_path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(name)
    writer.add_file_type(getattr(gguf.LlamaFileType, GGUF_TYPES[gguf_type][1]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_hparams(writer, config, family)
    pre = _add_vocab(writer, model_dir, config)
    counts: dict[str, int] = {}
    for tensor_name, data, qtype in _tensors(model_dir, config, family, arch, permute_qk,
                                              getattr(gguf.GGMLQuantizationType,
                                                      GGUF_TYPES[gguf_type][0])):
        stored = data if qtype == gguf.GGMLQuantizationType.F32 else \
            gguf.quants.quantize(data, qtype)
        writer.add_tensor(tensor_name, stored, raw_dtype=qtype)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"architecture": gguf.MODEL_ARCH_NAMES[arch], "tensor_types": counts,
            "pre_tokenizer": pre}


def _rope(config: dict) -> dict:
    """transformers 5 keeps rope_theta and the scaling in rope_parameters (per layer type for
    Gemma 3: this is its global layers'); older configs did not."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope = dict(rope.get("full_attention") or rope)
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    return rope


def _local_rope(config: dict) -> dict:
    """Gemma 3's sliding-window layers' rope (a base of 10000 in its configs)."""
    rope = dict((config.get("rope_parameters") or {}).get("sliding_attention") or {})
    rope.setdefault("rope_theta", config.get("rope_local_base_freq", 10000.0))
    return rope


def _head_dim(config: dict) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def _add_hparams(writer, config: dict, family: str) -> None:
    import gguf

    rope = _rope(config)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads") or config["num_attention_heads"])
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    # Phi-3's partial_rotary_factor (1 in the Phi-3 models) rotates part of each head
    writer.add_rope_dimension_count(int(_head_dim(config) * rope.get(
        "partial_rotary_factor", config.get("partial_rotary_factor") or 1.0)))
    writer.add_vocab_size(config["vocab_size"])
    if _head_dim(config) != config["hidden_size"] // config["num_attention_heads"] or \
            family in NORM_SHIFTED:
        writer.add_key_length(_head_dim(config))
        writer.add_value_length(_head_dim(config))
    if rope.get("rope_type", "default") == "linear":  # llama3: the rope_freqs tensor
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    if family == "gemma2":
        writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])
    elif family == "gemma3_text":
        writer.add_rope_freq_base_swa(_local_rope(config)["rope_theta"])
        if config.get("final_logit_softcapping") is not None:
            writer.add_final_logit_softcapping(config["final_logit_softcapping"])
    if family in NORM_SHIFTED:  # which layers slide, as transformers has them
        writer.add_sliding_window(config["sliding_window"])
        if config.get("layer_types"):
            writer.add_sliding_window_pattern([kind == "sliding_attention"
                                               for kind in config["layer_types"]])
    elif family == "phi3":  # 0: no sliding window (Phi-4), as the convert script writes it
        writer.add_sliding_window(config.get("sliding_window") or 0)
        if config.get("original_max_position_embeddings"):
            writer.add_rope_scaling_orig_ctx_len(config["original_max_position_embeddings"])


def _add_vocab(writer, model_dir: Path, config: dict) -> str:
    """The tokenizer, read by gguf's vocab classes: a byte-level BPE ("gpt2") or a
    SentencePiece-style BPE with byte fallback ("llama"). Returns the pre-tokenizer name."""
    import gguf
    from gguf.vocab import BpeVocab, LlamaHfVocab, SpecialVocab
    from transformers import AutoTokenizer

    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    byte_level = not tokenizer_json["model"].get("byte_fallback", False)
    vocab = BpeVocab(model_dir) if byte_level else LlamaHfVocab(model_dir)
    tokens, scores, types = (list(column) for column in zip(*vocab.all_tokens()))
    if not byte_level:
        scores = _merge_scores(tokenizer_json, tokens)
    special = set(AutoTokenizer.from_pretrained(model_dir).all_special_ids)
    types = [gguf.TokenType.CONTROL if i in special else t for i, t in enumerate(types)]
    for i in range(len(tokens), config["vocab_size"]):  # an embedding padded past the vocab
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    pre = _pre_tokenizer(tokenizer_json.get("pre_tokenizer") or {}) if byte_level else "default"
    writer.add_tokenizer_model(vocab.tokenizer_model)
    writer.add_tokenizer_pre(pre)
    if not byte_level:  # llama.cpp's SentencePiece default: a space before the text (not Gemma's)
        writer.add_add_space_prefix(_adds_space_prefix(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    SpecialVocab(model_dir, load_merges=byte_level, n_vocab=len(tokens)).add_to_gguf(
        writer, quiet=True)
    return pre


def _merge_scores(tokenizer_json: dict, tokens: list[bytes]) -> list[float]:
    """Scores for llama.cpp's SentencePiece tokenizer, which joins the adjacent pair whose
    joined token scores highest: minus the rank of the merge that makes each token, so that it
    joins in the order of the BPE merges as the Hugging Face tokenizer does (gguf's LlamaHfVocab
    gives every token -1000, and llama.cpp then joins left to right instead)."""
    ranks: dict[str, int] = {}
    for rank, merge in enumerate(tokenizer_json["model"].get("merges") or []):
        ranks.setdefault("".join(merge.split(" ", 1) if isinstance(merge, str) else merge), rank)
    return [-float(ranks[text]) if (text := token.decode("utf-8", "replace")) in ranks else 0.0
            for token in tokens]


def _adds_space_prefix(tokenizer_json: dict) -> bool:
    """Whether a SentencePiece-style tokenizer puts "▁" before the text: a Prepend normalizer
    (Llama 2, Phi-3) or a Metaspace pre-tokenizer that prepends (Mistral)."""
    steps = json.dumps([tokenizer_json.get("normalizer"), tokenizer_json.get("pre_tokenizer")])
    return '"Prepend"' in steps or ('"Metaspace"' in steps and
                                    '"prepend_scheme": "never"' not in steps and
                                    '"add_prefix_space": false' not in steps)


def _pre_tokenizer(pre_tokenizer: dict) -> str:
    """llama.cpp's name for the pre-tokenizer's split: GPT-2's (a ByteLevel step with its own
    regex), Llama 3's or Qwen2's (a Split regex); "default" for any other."""
    if pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex", True):
        return "gpt-2"
    pattern = json.dumps(pre_tokenizer)
    return next((name for regex, name in PRE_TOKENIZERS.items()
                 if json.dumps(regex)[1:-1] in pattern), "default")


def _tensors(model_dir: Path, config: dict, family: str, arch, permute_qk: bool, qtype):
    """(GGUF name, float32 array, storage type) for each tensor, in llama.cpp's naming."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    blocks = config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(arch, blocks)
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    state = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(shard))
    for hf_name, tensor in state.items():
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # llama.cpp reads the tied output from token_embd
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFExportError(f"GGUF export cannot place the tensor {hf_name}.",
                                  "Convert this model with llama.cpp's convert_hf_to_gguf.py.")
        data = tensor.float().numpy()
        if family in NORM_SHIFTED and hf_name.endswith("norm.weight"):
            data = data + 1
        if permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, heads)
        elif permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, kv_heads)
        yield name, np.ascontiguousarray(data), _storage(data, qtype)
    if _rope(config).get("rope_type") == "llama3":
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", \
            _llama3_factors(config), gguf.GGMLQuantizationType.F32


def _storage(data, qtype):
    """As convert_hf_to_gguf.py does: 1-D tensors (norms, biases) stay 32-bit; a row that is
    not whole blocks of the quantisation goes 16-bit."""
    import gguf

    if data.ndim < 2:
        return gguf.GGMLQuantizationType.F32
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return qtype if data.shape[-1] % block == 0 else gguf.GGMLQuantizationType.F16


def _permute(weights, heads: int):
    """llama.cpp's LlamaModel.permute: Hugging Face's rotary halves to GGML's interleaving."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _llama3_factors(config: dict):
    """Llama 3's frequency-dependent rope scaling as llama.cpp's rope_freqs tensor (the
    formula of convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors)."""
    import numpy as np

    rope = _rope(config)
    dim = _head_dim(config)
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), \
        rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in 1.0 / (rope["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float32) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            factors.append(1.0)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


# --- Ollama ---------------------------------------------------------------------------------

def ollama_modelfile(gguf_name: str, model_dir: Path) -> str:
    """An Ollama Modelfile: FROM the GGUF, the chat template as Ollama's TEMPLATE (rendered
    from the tokenizer's own template, with Ollama's placeholders in the messages' places) and
    the end-of-turn token as a stop."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lines = [f"FROM ./{gguf_name}"]
    if not tokenizer.chat_template:
        lines.append("# The tokenizer has no chat template: Ollama uses the prompt as it is.")
        return "\n".join(lines) + "\n"
    lines.append(f'TEMPLATE """{_go_template(tokenizer)}"""')
    if tokenizer.eos_token:
        lines.append(f'PARAMETER stop "{tokenizer.eos_token}"')
    return "\n".join(lines) + "\n"


def _go_template(tokenizer) -> str:
    """The chat template as Ollama's Go template, for one system + user turn and the reply."""
    def render(messages: list[dict]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)

    user = render([{"role": "user", "content": "\x00PROMPT\x00"}])
    template = user.replace("\x00PROMPT\x00", "{{ .Prompt }}")
    try:
        with_system = render([{"role": "system", "content": "\x00SYSTEM\x00"},
                              {"role": "user", "content": "\x00PROMPT\x00"}])
    except Exception:  # noqa: BLE001 - a template that refuses a system turn: none offered
        with_system = ""
    if "\x00SYSTEM\x00" in with_system:
        system = with_system.replace("\x00SYSTEM\x00", "{{ .System }}").replace(
            "\x00PROMPT\x00", "{{ .Prompt }}")
        template = f"{{{{ if .System }}}}{system}{{{{ else }}}}{template}{{{{ end }}}}"
    return template + "{{ .Response }}"
