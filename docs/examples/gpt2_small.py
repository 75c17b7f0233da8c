"""Inside GPT-2 small, from files on your own disk: the logit lens, the heads that write the answer,
and an activation-patching sweep, on Wang et al.'s indirect-object sentence. Nothing is downloaded.

Put four files from https://huggingface.co/openai-community/gpt2/tree/main in one directory,

    gpt2/config.json  gpt2/model.safetensors  gpt2/tokenizer.json  gpt2/tokenizer_config.json

(in a browser, or `hf download openai-community/gpt2 config.json model.safetensors tokenizer.json
tokenizer_config.json --local-dir gpt2` where the Hub is reachable), install minillm with its text extra
(`pip install -e ".[text]"`), then run

    python docs/examples/gpt2_small.py gpt2

On a laptop CPU it takes about a minute, most of it compiling. The same calls work for gpt2-medium,
-large, -xl and distilgpt2 (their directories hold the same three files).
"""

from __future__ import annotations

import sys

import jax.numpy as jnp

from minillm import GPT
from minillm.decompose import accumulated_resid, logit_attrs, stack_head_results
from minillm.patching import get_act_patch_attn_head_out_all_pos

PROMPT = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"  # the answer becomes " John"


def main(path: str, prompt: str = PROMPT, corrupted: str = CORRUPTED, answer: str = " Mary", other: str = " John"):
    model = GPT.from_pretrained(path)  # weights processed as TransformerLens does: fold_ln, centring
    right, wrong = model.to_single_token(answer), model.to_single_token(other)
    tokens = model.to_tokens(prompt)  # [1, p], <|endoftext|> first
    logits, cache = model.run_with_cache(tokens)

    def logit_diff(logits):
        return logits[0, -1, right] - logits[0, -1, wrong]

    top = model.to_string(logits[0, -1].argmax())
    print(f"{prompt!r} -> {top!r}; logit difference {answer!r} - {other!r} = {float(logit_diff(logits)):.2f}")

    # 1. The logit lens: the residual stream entering each layer (and the final one) at the last
    #    position, through ln_final and the unembedding, as if the model stopped there.
    resid, labels = accumulated_resid(model, cache, apply_ln=True, pos_slice=-1, return_labels=True)
    lens = resid[:, 0] @ model.W_U + model.b_U  # [layer + 1, d_vocab]; the last row is the logits
    print("\nlogit lens (top token, logit difference):")
    for label, row in zip(labels, lens):
        print(f"  {label:>10}  {model.to_string(row.argmax())!r:>12}  {float(row[right] - row[wrong]):+.2f}")

    # 2. Direct logit attribution: what each head writes in the direction of the logit difference,
    #    and where each of the top heads looks from the last position.
    heads, names = stack_head_results(model, cache, pos_slice=-1, return_labels=True)
    attrs = logit_attrs(model, cache, heads, right, wrong, pos_slice=-1)[:, 0]  # [layer * head]
    str_tokens = model.to_str_tokens(tokens)
    print("\nheads writing the answer (direct logit attribution; attends most to):")
    for i in jnp.argsort(-jnp.abs(attrs))[:5]:
        layer, head = divmod(int(i), model.cfg.n_heads)
        looks_at = int(cache["pattern", layer][0, head, -1].argmax())
        print(f"  {names[int(i)]:>6}  {float(attrs[i]):+.2f}  {str_tokens[looks_at]!r}")

    # 3. Activation patching: each head's output copied from the clean run into the corrupted one,
    #    every (layer, head) in one compiled call; 1 = the clean logit difference restored.
    corrupted_tokens = model.to_tokens(corrupted)
    clean, base = logit_diff(logits), logit_diff(model(corrupted_tokens))

    def restored(logits):
        return (logit_diff(logits) - base) / (clean - base)

    patched = get_act_patch_attn_head_out_all_pos(model, corrupted_tokens, cache, restored)  # [layer, head]
    print("\nheads whose clean output restores the answer most (activation patching):")
    for i in jnp.argsort(-patched.reshape(-1))[:5]:
        layer, head = divmod(int(i), model.cfg.n_heads)
        print(f"  L{layer}H{head}  {float(patched[layer, head]):+.2f}")
    return patched


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
