"""sagan_tf.training.config: TrainConfig.validate names the offending flag."""
import pytest

from sagan_tf.training.config import TrainConfig


@pytest.mark.parametrize("field,value", [
    ("batch_size", 0), ("generator_type", "resnet"), ("discriminator_type", "bogus"),
    ("loss_type", "wgan"), ("image_size", 48), ("d_step", 0), ("beta1", 1.0),
    ("discriminator_learning_rate", 0.0), ("strategy", "horovod"),
])
def test_bad_flags_are_named(field, value):
    with pytest.raises(ValueError, match=f"--{field}"):
        TrainConfig(**{field: value}).validate()
