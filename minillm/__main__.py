"""`python -m minillm`: build a small model and print its hook points with their shapes.

A quick look at what can be cached and patched; pass config fields to change the model, e.g.
`python -m minillm --n_layers 1 --attn_only`.
"""

import argparse

import numpy as np

from minillm import GPT, GPTConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_layers", type=int, default=2)
    parser.add_argument("--d_model", type=int, default=64)
    parser.add_argument("--n_heads", type=int, default=4)
    parser.add_argument("--n_ctx", type=int, default=16)
    parser.add_argument("--d_vocab", type=int, default=50)
    parser.add_argument("--attn_only", action="store_true")
    parser.add_argument("--no_ln", action="store_true", help="normalization_type=None")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    cfg = GPTConfig(
        n_layers=args.n_layers,
        d_model=args.d_model,
        n_heads=args.n_heads,
        n_ctx=args.n_ctx,
        d_vocab=args.d_vocab,
        attn_only=args.attn_only,
        normalization_type=None if args.no_ln else "LN",
    )
    model = GPT(cfg)
    tokens = np.random.default_rng(0).integers(0, cfg.d_vocab, (args.batch, cfg.n_ctx))
    logits, cache = model.run_with_cache(tokens)
    print(cfg)
    print(
        f"\n{sum(v.size for v in model.state_dict().values()):,} parameters; tokens {tokens.shape} -> "
        f"logits {tuple(logits.shape)}\n"
    )
    width = max(len(n) for n in cache)
    for name, act in cache.items():
        print(f"  {name:<{width}}  {tuple(act.shape)}")
    print(
        f"\n{len(cache)} hook points. Read one with cache[name] (or cache['pattern', 0]); "
        "replace one with model.run_with_hooks(tokens, [(name, fn)])."
    )


if __name__ == "__main__":
    main()
