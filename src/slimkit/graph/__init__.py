"""Graph utilities shared by the core and the techniques: :mod:`.fold` folds BatchNorm into the layer before it,
:mod:`.masks` keeps masked-out weights at zero while the rest train, :mod:`.layers` says what kind of layer a
module is (subclasses, transformers' Conv1D, tied weights), :mod:`.copying` deep-copies parametrized models,
:mod:`.blockwise` calibrates layer-wise methods one transformer block at a time."""
