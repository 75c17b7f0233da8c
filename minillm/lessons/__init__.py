"""What the lesson notebooks use beside the library: their shipped checkpoints, the checkers of
their exercises, and the one call that retrains a lesson's model.

    from minillm.lessons import checkpoint, retrain
    model = GPT.load(checkpoint("induction/model.safetensors"))
"""

from minillm.lessons.checkpoints import ENV, checkpoint
from minillm.lessons.retrain import retrain

__all__ = ["ENV", "checkpoint", "retrain"]
