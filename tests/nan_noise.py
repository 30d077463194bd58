"""A training run that blows up on purpose: the divergence tests' fault.

:class:`NaNNoiseTrainer` is a :class:`~sagan_tf.training.trainer.Trainer`
whose first attempt at each of the given global steps trains on NaN noise for
the G steps, so that iteration writes NaN into G, D and the optimizer state
like a real blow-up. The loop takes it through ``train(...,
make_trainer=...)``.

Run as a script (the repository on ``PYTHONPATH``) it is ``train_imagenet.py``
with that trainer::

    python tests/nan_noise.py 5,9 --data_dir ... [train_imagenet.py flags]
"""
import functools
import sys

import tensorflow as tf

from sagan_tf.training.trainer import Trainer


class NaNNoiseTrainer(Trainer):
    """A Trainer whose first attempt at each step of ``nan_steps`` has NaN G noise."""

    def __init__(self, config, strategy=None, nan_steps=()):
        super().__init__(config, strategy)
        self.nan_steps = set(nan_steps)

    def train_iterations(self, real_batches, check=None):
        step = int(self.step.numpy()) + 1
        if len(real_batches) != 1 or step not in self.nan_steps:
            return super().train_iterations(real_batches, check)
        self.nan_steps.discard(step)
        noise = self.sample_noise()
        nan = tf.constant(float("nan"))
        noise = {"g": [(z * nan, y) for z, y in noise["g"]], "d": list(noise["d"])}
        metrics, real_images, fake = self.parity_iteration(
            self.make_inputs(list(real_batches[0]), self.distribute(noise)))
        return [(metrics, None if check is None else check(metrics))], real_images, fake


def _main():
    steps = {int(s) for s in sys.argv.pop(1).split(",")}
    import train_imagenet  # pylint: disable=import-outside-toplevel
    from sagan_tf import cli  # pylint: disable=import-outside-toplevel
    from sagan_tf.training import loop  # pylint: disable=import-outside-toplevel
    # train_imagenet.main calls loop.train(config, log=...): the same call, this trainer.
    loop.train = functools.partial(
        loop.train, make_trainer=functools.partial(NaNNoiseTrainer, nan_steps=steps))
    cli.run(train_imagenet.main, program="train_imagenet.py")


if __name__ == "__main__":
    _main()
