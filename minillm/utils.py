"""The handful of TransformerLens `utils` calls that ARENA code reaches for, under their names.

from minillm import utils
utils.get_act_name("pattern", 0)      # "blocks.0.attn.hook_pattern" (minillm.act_name)
utils.to_numpy(cache["pattern", 0])   # a NumPy array
utils.lm_cross_entropy_loss(logits, tokens, per_token=True)
utils.composition_scores(left, right)
"""

from __future__ import annotations

from minillm.circuits import composition_scores
from minillm.model.hooks import act_name as get_act_name
from minillm.model.losses import next_token_loss as lm_cross_entropy_loss
from minillm.model.transformer_lens import to_numpy

__all__ = ["get_act_name", "to_numpy", "lm_cross_entropy_loss", "composition_scores"]
