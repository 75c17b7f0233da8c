"""The recipes moved into the package (minillm/recipes.py) so that an installed minillm has them;
this name stays for code that imported them from the checkout."""

from minillm.recipes import *  # noqa: F403
from minillm.recipes import RECIPES, Recipe, get_recipe, summarize  # noqa: F401
