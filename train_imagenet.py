r"""Trains class-conditional SAGAN (the 2018 release's train_imagenet.py, in TF2).

The flags and defaults are the release's (NUMERICS §9) plus a few of this port's.
Everything happens in sagan_tf.training.loop.train; this script parses flags,
sets up devices and, with --demo, applies the demo-sized defaults and writes
the demo data set first.

Examples:

  # The CPU demo on generated 32x32 data (10 classes): 8 minutes on 2 idle
  # AVX-512 cores, about 22 on AVX2 ones (docs/DEMO.md); demo-sized defaults
  # (DEMO_DEFAULTS in train_imagenet.py), any flag given overrides them:
  python train_imagenet.py --demo

  # The release's ImageNet run (the first 4 GPUs x 64 images, 128x128; with a
  # fifth GPU, eval_imagenet.py runs on it):
  python train_imagenet.py --data_dir /data/imagenet_128 --checkpoint_dir checkpoint

Checkpoints, config.json and TensorBoard events go to
<checkpoint_dir>/imagenet_<batch_size>; rerunning the same command resumes.
"""
import dataclasses
import os
import sys

from absl import app, flags

from sagan_tf import cli, options

FLAGS = flags.FLAGS

# --- The release's flags (NUMERICS §9), same names and defaults.
flags.DEFINE_string("data_dir", None,
                    "Directory of *.tfrecords training records (NUMERICS §7 format: 'image_raw' "
                    "uint8 SxSx3, 'label' int64). With --demo: defaults to data/demo.")
flags.DEFINE_string("checkpoint_dir", "checkpoint",
                    "Checkpoints, config.json and TensorBoard events go to "
                    "<checkpoint_dir>/imagenet_<batch_size> (the release's layout).")
flags.DEFINE_integer("batch_size", 64, "Images per replica (the release: per GPU tower).",
                     lower_bound=1)
flags.DEFINE_integer("num_towers", 4,
                     "GPUs to train on: the first N visible (one replica each; global batch = "
                     "batch_size x N); 0: all. Without GPUs: the CPU (--num_cpu_replicas).",
                     lower_bound=0)
flags.DEFINE_integer("shuffle_buffer_size", 100000, "Records in the shuffle buffer.",
                     lower_bound=1)
flags.DEFINE_integer("save_summaries_steps", 200,
                     "Write TensorBoard summaries every this many steps (and at the first "
                     "step of a run); 0 disables them.", lower_bound=0)
flags.DEFINE_float("save_checkpoint_secs", 1200,
                   "Save a checkpoint every this many seconds (and always at the end); "
                   "0: only at the end.", lower_bound=0)
flags.DEFINE_integer("d_step", 1, "Discriminator steps per iteration.", lower_bound=1)
flags.DEFINE_integer("g_step", 1, "Generator steps per iteration.", lower_bound=1)
flags.DEFINE_float("discriminator_learning_rate", 0.0004, "Adam learning rate of D (TTUR).")
flags.DEFINE_float("generator_learning_rate", 0.0001, "Adam learning rate of G (TTUR).")
flags.DEFINE_float("beta1", 0.0, "Adam beta1 of both optimisers.")
flags.DEFINE_float("beta2", 0.999, "Adam beta2 of both optimisers (not a flag in the release; "
                   "its value there).")
flags.DEFINE_integer("image_size", 128,
                     "Image side S (a power of two >= 32; 128 is the release's networks). "
                     "Must match the records.")
flags.DEFINE_integer("z_dim", 128, "Dimension of the latent z.", lower_bound=1)
flags.DEFINE_integer("gf_dim", 64, "Generator base channels.", lower_bound=1)
flags.DEFINE_integer("df_dim", 64, "Discriminator base channels.", lower_bound=1)
flags.DEFINE_integer("number_classes", 1000, "Number of classes (labels in [0, n)); not given: "
                     "<data_dir>/manifest.json's num_classes, else 1000. 1: unconditional.",
                     lower_bound=1)
flags.DEFINE_enum("loss_type", "hinge_loss", options.LOSS_TYPES, "GAN loss.")
flags.DEFINE_enum("generator_type", "test", options.ARCHS,
                  "test: SAGAN (attention at 32x32); baseline: no attention (SNGAN "
                  "projection); test_64: attention at 64x64.")
flags.DEFINE_enum("discriminator_type", "test", options.ARCHS,
                  "As --generator_type, for the discriminator.")
# --- This port's flags.
flags.DEFINE_integer("max_steps", 2_000_000, "Stop at this global step (the release: 2M).",
                     lower_bound=0)
flags.DEFINE_integer("seed", None,
                     "Seed of the weights, noise and shuffling. Default: drawn at the first "
                     "start and stored in config.json.")
flags.DEFINE_enum("strategy", "mirrored", options.TRAIN_CHOICES["strategy"],
                  "mirrored: local GPUs (or --num_cpu_replicas CPUs); multiworker: "
                  "MultiWorkerMirroredStrategy, cluster from TF_CONFIG; tpu: TPUStrategy on "
                  "--tpu.")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy tpu.")
flags.DEFINE_enum("cross_device_ops", "auto", options.CROSS_DEVICE_OPS,
                  "All-reduce of --strategy mirrored. auto: NCCL on GPUs; hierarchical_copy "
                  "where NCCL fails (Docker without --ipc=host). docs/TRAINING.md.")
flags.DEFINE_boolean("allow_cpu", False,
                     "Train on the CPU although an NVIDIA driver is present and TensorFlow sees "
                     "no GPU (else an error: TensorFlow without CUDA?).")
flags.DEFINE_integer("num_cpu_replicas", 0,
                     "CPU-only machines: split the CPU into this many logical devices and "
                     "train with that many replicas (tests the multi-replica path; no speed-up).",
                     lower_bound=0)
flags.DEFINE_boolean("demo", False,
                     "The CPU demo: demo-sized defaults (DEMO_DEFAULTS) for flags not given; "
                     "writes the demo data set to --data_dir (default data/demo) if it holds no "
                     "records.")
flags.DEFINE_boolean("shuffle", True,
                     "Shuffle files and records (the release). --noshuffle reads them in "
                     "order, so that a stopped and resumed run equals an uninterrupted one.")
flags.DEFINE_boolean("skip_corrupt_records", False,
                     "Skip the unreadable rest of a corrupt/truncated record file (with a "
                     "warning) instead of stopping.")
flags.DEFINE_boolean("allow_incomplete_records", False,
                     "Train on converter shards whose manifest.json is missing or lists "
                     "shards that are not there (an unfinished conversion); refused otherwise.")
flags.DEFINE_integer("log_every_steps", 100, "Print a progress line every this many steps.",
                     lower_bound=0)
flags.DEFINE_integer("keep_checkpoint_max", 5, "Checkpoints to keep.", lower_bound=1)
# --- Numerics and performance options (docs/PERFORMANCE.md).
flags.DEFINE_boolean("allow_tf32", False,
                     "Let float32 convolutions and matmuls use TF32 on GPUs that have it; off: "
                     "the release's float32 (docs/NUMERICS.md).")
flags.DEFINE_boolean("xla", False,
                     "XLA-compile each replica's G and D forward/backward passes (state "
                     "writes and the optimiser updates stay outside XLA).")
flags.DEFINE_integer("iterations_per_loop", 1,
                     "k > 1: k iterations per compiled call, the same numbers; calls never run "
                     "past a summary/log/checkpoint step. Needs --on_nan stop.",
                     lower_bound=1)
flags.DEFINE_enum("mixed_precision", "none", options.MIXED_PRECISION_POLICIES,
                  "Dtype policy of the activations (weights, SN, BN statistics, logits and "
                  "losses stay float32); mixed_float16 adds loss scaling.")
flags.DEFINE_enum("graph_optimization", "auto", options.GRAPH_OPTIMIZATIONS,
                  "Grappler settings of the compiled iteration: light (faster first step, "
                  "rounding-level differences), full (TensorFlow's), auto: light on CPUs.")
flags.DEFINE_enum("attention", "release", options.BLOCK_TYPES,
                  "Block at the attention positions: release (pooled, NUMERICS §3), slide "
                  "(paper-slide variant), residual / resnet_block (Table 1 comparisons).")
flags.DEFINE_integer("attention_query_block_size", 0,
                     "Memory-efficient attention: queries in blocks of this many positions, "
                     "recomputed in the backward pass (same result); 0: all at once.",
                     lower_bound=0)
flags.DEFINE_enum("sn_gradient", "release", options.SN_GRADIENTS,
                  "Backward pass of spectral norm: release (what the 2018 release ran, TF1 ref "
                  "variables) or exact (docs/NUMERICS.md); same forward.")
# --- The paper's ablations (docs/REPRODUCING.md); the defaults are the release's networks.
flags.DEFINE_string("g_attention_resolutions", "",
                    "G feature-map sizes followed by the attention block, e.g. 16 or 16,32; "
                    "'none': no block; empty: where --generator_type puts it.")
flags.DEFINE_string("d_attention_resolutions", "",
                    "As --g_attention_resolutions, for D (its blocks output image_size/2, "
                    "..., 4). Empty: where --discriminator_type puts it.")
flags.DEFINE_boolean("g_spectral_norm", True,
                     "Spectral norm in G (the release). --nog_spectral_norm: plain linear/conv "
                     "layers in G, the paper's 'SN on D only' baseline (Figure 3).")
flags.DEFINE_integer("save_checkpoint_steps", 0,
                     "Also save a checkpoint every this many steps; 0: only by time "
                     "(--save_checkpoint_secs) and at the end.", lower_bound=0)
flags.DEFINE_integer("standing_stats_batches", 0,
                     "N > 0: also write samples_<step>_standing_stats.png with batch-norm "
                     "statistics averaged over N batches (docs/DEVIATIONS.md).", lower_bound=0)
flags.DEFINE_boolean("collapse_summaries", True,
                     "Also write collapse/ summaries (sigmas, gradient norms, share of reals "
                     "scored positive) at summary steps; read-only.")
flags.DEFINE_float("g_ema_decay", 0.0,
                   "d > 0: also keep a moving average of G's weights (generator_ema; used by "
                   "evaluation and the tools); 0: off (docs/DEVIATIONS.md).",
                   lower_bound=0.0, upper_bound=0.9999999)
flags.DEFINE_enum("on_nan", "stop", options.ON_NAN_CHOICES,
                  "A non-finite loss or weight: stop (last checkpoint untouched) or skip_step "
                  "(undo the iteration exactly; gives up after 10 in a row).")

_DEMO_DIR = os.path.join("data", "demo")
#: --demo's settings for the flags not given on the command line: a run whose
#: samples become recognisably the 10 demo classes within about 8 minutes on
#: 2 AVX-512 CPU cores, 22 on AVX2 ones (measured in docs/DEMO.md).
DEMO_DEFAULTS = {
    "image_size": 32, "number_classes": 10, "gf_dim": 8, "df_dim": 8, "batch_size": 32,
    "max_steps": 2500, "checkpoint_dir": os.path.join("runs", "demo"),
    "num_towers": 1, "log_every_steps": 100, "save_summaries_steps": 100,
    "save_checkpoint_steps": 500,
    "keep_checkpoint_max": 20, "standing_stats_batches": 16, "seed": 0,
    # The averaged generator: a short run's raw G swings from checkpoint to
    # checkpoint; its average over ~1000 iterations improves steadily (docs/DEMO.md).
    "g_ema_decay": 0.999,
}


def _apply_demo_defaults():
    """Sets the DEMO_DEFAULTS of the flags not given explicitly; returns them."""
    applied = {}
    for name, value in DEMO_DEFAULTS.items():
        if not FLAGS[name].present:
            setattr(FLAGS, name, value)
            applied[name] = value
    return applied


def _prepare_demo_data(data_dir):
    """Writes the demo records into ``data_dir`` unless it already holds records."""
    from sagan_tf.data import demo_data, record_format
    from sagan_tf.training.config import ConfigError
    try:
        record_format.list_record_files(data_dir)
        return
    except FileNotFoundError:
        pass
    print(f"--demo: writing the demo data set ({FLAGS.number_classes} classes, "
          f"{FLAGS.image_size}x{FLAGS.image_size}) to {data_dir}", flush=True)
    try:
        demo_data.write_demo_dataset(data_dir, image_size=FLAGS.image_size,
                                     num_classes=FLAGS.number_classes, seed=0)
    except ValueError as e:
        raise ConfigError(f"--demo with --number_classes {FLAGS.number_classes} "
                          f"--image_size {FLAGS.image_size}: {e}") from e


def _number_classes_from_manifest(data_dir):
    """Sets --number_classes from ``<data_dir>/manifest.json`` when it states it."""
    from sagan_tf.data import record_format
    from sagan_tf.training.config import ConfigError
    try:
        n = record_format.manifest_num_classes(data_dir)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if n is not None:
        FLAGS.number_classes = n
        print(f"--number_classes={n} (from {data_dir}/manifest.json)", flush=True)


def _config_from_flags():
    """The TrainConfig of the flags: they are named as its fields; a field
    without a flag keeps its default."""
    from sagan_tf.training.config import TrainConfig
    return TrainConfig(**{f.name: getattr(FLAGS, f.name)
                          for f in dataclasses.fields(TrainConfig) if f.name in FLAGS})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.demo:
        applied = _apply_demo_defaults()
        if applied:
            print("--demo settings: " + " ".join(f"--{k}={v}" for k, v in applied.items()),
                  flush=True)
    # A bad flag fails at once, before TensorFlow loads (a ConfigError: cli.run
    # prints its one line); train() checks again.
    _config_from_flags().validate()
    cli.quiet_tensorflow()
    # The replicas' devices (the first --num_towers GPUs, the others hidden;
    # or logical CPUs) must be set before TensorFlow runs any op.
    from sagan_tf.training import devices
    if FLAGS.strategy in ("mirrored", "multiworker"):
        devices.configure_training_devices(FLAGS.num_towers, FLAGS.allow_cpu,
                                           FLAGS.num_cpu_replicas)

    from sagan_tf.training.config import ConfigError
    from sagan_tf.training.faults import TrainingError
    from sagan_tf.training.loop import train
    try:
        data_dir = FLAGS.data_dir
        if FLAGS.demo:
            data_dir = data_dir or _DEMO_DIR
            _prepare_demo_data(data_dir)
        elif not data_dir:
            raise ConfigError("--data_dir is required (or pass --demo to generate demo data)")
        if not FLAGS["number_classes"].present and not FLAGS.demo:
            _number_classes_from_manifest(data_dir)
        config = dataclasses.replace(_config_from_flags(), data_dir=data_dir)
        result = train(config, log=lambda line: print(line, flush=True))
    except TrainingError as e:  # a fault while training: one clear line, no traceback
        print(f"train_imagenet.py: error: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:  # a bad flag: one clear line, no traceback
        print(f"train_imagenet.py: error: {e}", file=sys.stderr)
        return 2
    print(f"Logdir {result['logdir']}: step {result['step']}, "
          f"{result['images_per_second']:.1f} images/s ({result['num_replicas']} replica(s) x "
          f"{config.batch_size} = global batch {result['global_batch_size']}), "
          f"wall time {result['wall_time_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    cli.run(main)
