"""--cross_device_ops (the mirrored strategy's all-reduce) and the report of an NCCL failure.

NCCL needs GPUs; on the CPU the choices that work there run on the two
logical CPUs of conftest, and an NCCL failure is injected at the first step.
"""
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.data import record_format
from sagan_tf.training import distribute
from sagan_tf.training.config import ConfigError, TrainConfig
from sagan_tf.training.devices import DevicePlan
from sagan_tf.training.faults import TrainingError
from sagan_tf.training.loop import train
from sagan_tf.training.run_config import load_config
from sagan_tf.training.trainer import Trainer

GPU_PLAN = DevicePlan("gpu", ("/gpu:0", "/gpu:1"), 2, "")
CPU_PLAN = DevicePlan("cpu", ("/cpu:0", "/cpu:1"), 0, "")
NCCL_MESSAGE = ("NCCL error in: external/nccl_archive/src/init.cc:1270 'unhandled system "
                "error (run with NCCL_DEBUG=INFO for details)'\n\t [[{{node "
                "NcclAllReduce}}]] [Op:__inference_iteration_1234]")


def test_choices_resolve_per_device_kind():
    ops, name = distribute.cross_device_ops("auto", GPU_PLAN)
    assert isinstance(ops, tf.distribute.NcclAllReduce) and name == "nccl"
    assert distribute.cross_device_ops("auto", CPU_PLAN) == (None, "reduction_to_one")
    ops, name = distribute.cross_device_ops("hierarchical_copy", GPU_PLAN)
    assert isinstance(ops, tf.distribute.HierarchicalCopyAllReduce) and name == "hierarchical_copy"
    ops, _ = distribute.cross_device_ops("reduction_to_one", CPU_PLAN)
    assert isinstance(ops, tf.distribute.ReductionToOneDevice)
    with pytest.raises(ValueError, match="--cross_device_ops nccl needs GPUs"):
        distribute.cross_device_ops("nccl", CPU_PLAN)
    with pytest.raises(ValueError, match="must be one of"):
        distribute.cross_device_ops("ring", GPU_PLAN)
    with pytest.raises(ConfigError, match="--cross_device_ops must be one of"):
        TrainConfig(cross_device_ops="ring")
    with pytest.raises(ValueError, match="only applies to --strategy mirrored"):
        distribute.make_strategy("multiworker", cross_device_ops_name="hierarchical_copy")


@pytest.mark.parametrize("name, kind", [
    ("hierarchical_copy", tf.distribute.HierarchicalCopyAllReduce),
    ("reduction_to_one", tf.distribute.ReductionToOneDevice)])
def test_strategy_all_reduces_with_the_choice(name, kind):
    strategy, plan = distribute.make_strategy_and_plan("mirrored", num_cpu_replicas=2,
                                                       cross_device_ops_name=name)
    assert plan.all_reduce == name and plan.devices == ("/cpu:0", "/cpu:1")
    assert isinstance(strategy.extended._cross_device_ops, kind)  # pylint: disable=protected-access
    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant([1.0, 2.0]) * (ctx.replica_id_in_sync_group + 1))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None)
    np.testing.assert_array_equal(total.numpy(), [3.0, 6.0])


def _records(directory):
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    record_format.write_records(os.path.join(directory, "part-0.tfrecords"),
                                rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
                                rng.integers(0, 3, 8))
    return str(directory)


def _config(tmp_path, **kw):
    base = dict(data_dir=_records(tmp_path / "data"), checkpoint_dir=str(tmp_path / "run"),
                image_size=32, gf_dim=4, df_dim=4, z_dim=8, number_classes=3, batch_size=2,
                seed=0, generator_type="baseline", discriminator_type="baseline",
                save_summaries_steps=0, log_every_steps=0, save_checkpoint_secs=0,
                num_cpu_replicas=2, max_steps=1)
    base.update(kw)
    return TrainConfig(**base)


def test_choice_is_in_the_start_line_and_config_json_and_resumes(tmp_path):
    config = _config(tmp_path, cross_device_ops="hierarchical_copy")
    lines = []
    train(config, log=lines.append)
    [start] = [ln for ln in lines if ln.startswith("Replicas:")]
    assert "global batch = 2 per replica x 2 = 4; all-reduce: hierarchical_copy " \
           "(--cross_device_ops)" in start
    with open(os.path.join(config.logdir, "config.json")) as f:
        stored = json.load(f)
    assert stored["cross_device_ops"] == "hierarchical_copy"
    assert stored["devices"]["all_reduce"] == "hierarchical_copy"
    assert load_config(config.logdir).cross_device_ops == "hierarchical_copy"
    lines.clear()
    resumed = train(dataclasses.replace(load_config(config.logdir), max_steps=2),
                    log=lines.append)
    assert resumed["step"] == 2 and lines[0].startswith("Resumed from")
    assert any("all-reduce: hierarchical_copy" in ln for ln in lines)


def _failing_trainer(error, at_call=1):
    """A Trainer whose ``at_call``-th ``train_iterations`` call raises ``error``."""
    class FailingTrainer(Trainer):
        calls = 0

        def train_iterations(self, real_batches, check=None):
            FailingTrainer.calls += 1
            if FailingTrainer.calls == at_call:
                raise error
            return super().train_iterations(real_batches, check)
    return FailingTrainer


def test_nccl_failure_at_the_first_step_names_the_docker_fix(tmp_path, strategy2):
    nccl = tf.errors.UnknownError(None, None, NCCL_MESSAGE)
    with pytest.raises(TrainingError) as e:
        train(_config(tmp_path), strategy=strategy2, log=lambda line: None,
              make_trainer=_failing_trainer(nccl))
    message = str(e.value)
    assert message.startswith("the all-reduce across GPUs (NCCL) failed at the first step: "
                              "NCCL error in: external/nccl_archive/src/init.cc:1270")
    assert "--ipc=host or --shm-size=1g" in message and "64 MB of /dev/shm" in message
    assert "--cross_device_ops hierarchical_copy" in message and "\n" not in message


def test_other_first_step_errors_are_not_called_nccl(tmp_path, strategy2):
    oom = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    with pytest.raises(tf.errors.ResourceExhaustedError, match="OOM when allocating"):
        train(_config(tmp_path / "a"), strategy=strategy2, log=lambda line: None,
              make_trainer=_failing_trainer(oom))
    assert distribute.nccl_failure(oom) is None
    assert distribute.nccl_failure(RuntimeError("Error while creating shared memory segment "
                                                "/dev/shm/nccl-x")) is not None
