"""The values each training option accepts, defined once (no TensorFlow import).

The entry scripts define their flags' choices from these before TensorFlow
loads; :meth:`sagan_tf.training.config.TrainConfig.validate` checks against
them, and the modules that implement an option (losses, layouts, layers,
compilation, distribute) take their lists from here. The options' defaults
are the fields of :class:`~sagan_tf.training.config.TrainConfig` (a module
that does not import TensorFlow either); ``tests/test_config.py`` checks
that every flag of ``train_imagenet.py`` has the name, default and choices
of its field and every field has its flag.
"""

__all__ = ["LOSS_TYPES", "ARCHS", "ATTENTION_TYPES", "RESIDUAL_TYPES", "BLOCK_TYPES",
           "SN_GRADIENTS", "MIXED_PRECISION_POLICIES", "GRAPH_OPTIMIZATIONS", "ON_NAN_CHOICES",
           "STRATEGY_KINDS", "CROSS_DEVICE_OPS", "TRAIN_CHOICES"]

#: ``--loss_type``: the release's hinge loss or its KL (non-saturating) loss.
LOSS_TYPES = ("hinge_loss", "kl_loss")
#: ``--generator_type`` / ``--discriminator_type``: the release's networks.
ARCHS = ("test", "baseline", "test_64")
#: Attention blocks: the release's pooled one, the paper-slide variant.
ATTENTION_TYPES = ("release", "slide")
#: The paper's "Residual" comparison blocks (Table 1), accepted by ``attention``
#: in place of an attention type: "residual" has the attention block's parameter
#: count, "resnet_block" is one more block of the network's own residual type.
RESIDUAL_TYPES = ("residual", "resnet_block")
#: Every value of the ``attention`` argument / ``--attention`` flag.
BLOCK_TYPES = ATTENTION_TYPES + RESIDUAL_TYPES
#: ``--sn_gradient``: the backward pass the release ran (TF1 ref variables) or
#: the exact gradient of W / sigma(W) (docs/NUMERICS.md §1.2).
SN_GRADIENTS = ("release", "exact")
#: ``--mixed_precision``: Keras global dtype policies.
MIXED_PRECISION_POLICIES = ("none", "mixed_bfloat16", "mixed_float16")
#: ``--graph_optimization``: Grappler settings of the compiled iteration.
GRAPH_OPTIMIZATIONS = ("auto", "full", "light")
#: ``--on_nan``: what a non-finite loss or weight does.
ON_NAN_CHOICES = ("stop", "skip_step")
#: ``--strategy`` (the first three) and, for programs, "default": TensorFlow's
#: default single-device strategy.
STRATEGY_KINDS = ("mirrored", "multiworker", "tpu", "default")
#: ``--cross_device_ops``: how the mirrored strategy all-reduces the replicas'
#: gradients. auto: NCCL on GPUs, TensorFlow's choice on CPUs (reduction to
#: one device).
CROSS_DEVICE_OPS = ("auto", "nccl", "hierarchical_copy", "reduction_to_one")

#: The choice-valued ``TrainConfig`` fields and their flags' choices.
TRAIN_CHOICES = {
    "loss_type": LOSS_TYPES,
    "generator_type": ARCHS,
    "discriminator_type": ARCHS,
    "strategy": STRATEGY_KINDS[:3],
    "mixed_precision": MIXED_PRECISION_POLICIES,
    "graph_optimization": GRAPH_OPTIMIZATIONS,
    "attention": BLOCK_TYPES,
    "sn_gradient": SN_GRADIENTS,
    "on_nan": ON_NAN_CHOICES,
    "cross_device_ops": CROSS_DEVICE_OPS,
}
