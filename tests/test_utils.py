"""TransformerLens' utils under their names (minillm/utils.py): get_act_name, to_numpy and
lm_cross_entropy_loss, composition_scores."""

import jax.numpy as jnp
import numpy as np

from minillm import act_name, circuits, utils


def test_utils_carry_transformerlens_names():
    assert utils.get_act_name("pattern", 0) == act_name("pattern", 0) == "blocks.0.attn.hook_pattern"
    array = utils.to_numpy(jnp.ones((2, 3)))
    assert isinstance(array, np.ndarray) and array.shape == (2, 3)
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 9)), jnp.float32)
    tokens = jnp.asarray([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert utils.lm_cross_entropy_loss(logits, tokens, per_token=True).shape == (2, 3)
    assert utils.composition_scores is circuits.composition_scores


def test_to_numpy_takes_a_bfloat16_torch_tensor_as_float32():
    """NumPy has no bfloat16: a torch bfloat16 tensor (here a stand-in, torch is not a dependency)
    comes back as float32, as GPT.from_transformer_lens reads one."""
    import numpy as np

    from minillm import utils

    class BFloat16Tensor:
        dtype = "torch.bfloat16"

        def detach(self):
            return self

        def cpu(self):
            return self

        def float(self):
            return type("F", (), {"numpy": lambda _: np.array([1.5, -2.0], np.float32)})()

        def numpy(self):
            raise TypeError("Got unsupported ScalarType BFloat16")

    out = utils.to_numpy(BFloat16Tensor())
    assert out.dtype == np.float32 and out.tolist() == [1.5, -2.0]
