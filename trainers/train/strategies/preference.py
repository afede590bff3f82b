"""What the dpo and rlhf strategies share: fitting preference pairs into token budgets.

TRL 1.15 has no `max_prompt_length` (DPOConfig and GRPOConfig only know `max_length` or the
completion length), so prompts are cut here, from the left, keeping the end of the dialogue that
the answers reply to. Cuts are made at token boundaries of the original text (character offsets
of a fast tokenizer), so no byte-level token is split in half.
"""

from __future__ import annotations

from trainers.errors import ConfigError

# Tokens a prompt must leave free: BOS, one answer token, EOS, one of slack for a merge across
# the prompt/answer boundary. (The config asks for 16 up front when max_seq_length is fixed;
# an inferred length already covers the data's answers.)
MIN_ANSWER_ROOM = 4


def _token_spans(tokenizer, text: str) -> list[tuple[int, int]]:
    if not tokenizer.is_fast:
        raise TypeError(f"{type(tokenizer).__name__} is a slow tokenizer: preference training cuts "
                        "prompts at token offsets, which needs a fast (Rust) tokenizer.")
    return tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]


def keep_last_tokens(tokenizer, text: str, n: int) -> tuple[str, bool]:
    """The text of the last n tokens of `text`, and whether anything was cut."""
    spans = _token_spans(tokenizer, text)
    if len(spans) <= n:
        return text, False
    return text[spans[-n][0]:], True


def keep_first_tokens(tokenizer, text: str, n: int) -> tuple[str, bool]:
    """The text of the first n tokens of `text`, and whether anything was cut."""
    spans = _token_spans(tokenizer, text)
    if len(spans) <= n:
        return text, False
    return (text[:spans[n - 1][1]] if n > 0 else ""), True


def cut_prompts(rows: list[dict], tokenizer, max_prompt_length: int,
                max_seq_length: int) -> tuple[list[dict], int]:
    """Rows with each prompt cut to its last max_prompt_length tokens; and how many were cut.

    Raises ConfigError when a prompt leaves no room for its answers in max_seq_length (the
    config check catches this up front unless max_seq_length is inferred, -1).
    """
    out, cut = [], 0
    for row in rows:
        prompt, was_cut = keep_last_tokens(tokenizer, row["prompt"], max_prompt_length)
        if len(_token_spans(tokenizer, prompt)) > max_seq_length - MIN_ANSWER_ROOM:
            raise ConfigError([{"field": "max_prompt_length", "message": (
                f"prompts of up to {max_prompt_length} tokens leave no room for the answers in "
                f"max_seq_length ({max_seq_length}) tokens: lower max_prompt_length (e.g. to "
                f"{max_seq_length // 2}) or raise max_seq_length")}])
        out.append({**row, "prompt": prompt})
        cut += was_cut
    return out, cut


def cut_answers(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """Cut chosen/rejected so prompt + answer + special tokens + EOS fit in max_length.

    TRL's RewardTrainer drops (does not truncate) pairs longer than its max_length; cutting them
    here keeps every pair. One token of slack covers a merge across the prompt/answer boundary.
    """
    specials = tokenizer.num_special_tokens_to_add() + 1  # BOS-like tokens, then the EOS TRL adds
    out, cut = [], 0
    for row in rows:
        budget = max_length - len(_token_spans(tokenizer, row["prompt"])) - specials - 1
        chosen, cut_c = keep_first_tokens(tokenizer, row["chosen"], budget)
        rejected, cut_r = keep_first_tokens(tokenizer, row["rejected"], budget)
        out.append({**row, "chosen": chosen, "rejected": rejected})
        cut += cut_c or cut_r
    return out, cut


def reference_is_disabled_adapter(trainer) -> str:
    """Make the reference model the policy with its adapter disabled, as TRL does for a new
    adapter; return what the reference is, for the run's events.

    Given a ready PEFT model (our providers attach the adapter themselves), TRL 1.15's DPO and
    GRPO trainers add a frozen copy of it, named "ref", as the reference. A fresh LoRA adapter
    (every lora_B zero) changes nothing, so that copy equals the base model: deleting it makes TRL
    disable the adapter for reference passes instead (no extra weights, none saved with the
    adapter).
    """
    model = trainer.model
    if "ref" in getattr(model, "peft_config", {}):
        if any(p.any() for n, p in model.named_parameters() if ".lora_B.default." in n):
            return "a frozen copy of the starting adapter (it was not freshly initialised)"
        model.delete_adapter("ref")
    return "the policy with its LoRA adapter disabled (no second copy of the weights)"


def last_logged(trainer, key: str):
    """The last value of a logged metric (train logs), or None."""
    values = [h[key] for h in trainer.state.log_history if key in h]
    return values[-1] if values else None
