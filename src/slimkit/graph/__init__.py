"""Graph utilities shared by the core and the techniques: :mod:`.fold` folds BatchNorm into the layer before it."""
