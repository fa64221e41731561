"""Stage 2, training: what we add around Axolotl (which does the training itself): the recipe check, the
Axolotl plugin that guards every run, and the embedded base model."""
