r"""Trains class-conditional SAGAN (the 2018 release's train_imagenet.py, in TF2).

The flags and defaults are the release's (NUMERICS §9) plus a few of this port's.
Everything happens in sagan_tf.training.loop.train; this script parses flags,
sets up devices and, with --demo, applies the demo-sized defaults and writes
the demo data set first.

Examples:

  # The CPU demo on generated 32x32 data (10 classes), about 10 minutes on 2
  # idle CPU cores; demo-sized defaults (DEMO_DEFAULTS in train_imagenet.py),
  # any flag given overrides them:
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

from sagan_tf import cli

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
                     "GPUs to train on: the first N GPUs TensorFlow sees, one replica (the "
                     "release's tower) each; global batch = --batch_size x N. Fewer visible "
                     "GPUs is an error; the others stay free (e.g. 5 GPUs: 0-3 train, 4 for "
                     "eval_imagenet.py). 0: every visible GPU. Without GPUs: the CPU "
                     "(--num_cpu_replicas).", lower_bound=0)
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
flags.DEFINE_integer("number_classes", 1000, "Number of classes (labels in [0, n)). Not "
                     "given: the num_classes of <data_dir>/manifest.json (written by "
                     "tools/convert_imagenet_to_records.py), else 1000 (the release's). 1: "
                     "unconditional (one folder of images).", lower_bound=1)
flags.DEFINE_enum("loss_type", "hinge_loss", ["hinge_loss", "kl_loss"], "GAN loss.")
flags.DEFINE_enum("generator_type", "test", ["test", "baseline", "test_64"],
                  "test: SAGAN (attention at 32x32); baseline: no attention (SNGAN "
                  "projection); test_64: attention at 64x64.")
flags.DEFINE_enum("discriminator_type", "test", ["test", "baseline", "test_64"],
                  "As --generator_type, for the discriminator.")
# --- This port's flags.
flags.DEFINE_integer("max_steps", 2_000_000, "Stop at this global step (the release: 2M).",
                     lower_bound=0)
flags.DEFINE_integer("seed", None,
                     "Seed of the weights, noise and shuffling. Default: drawn at the first "
                     "start and stored in config.json.")
flags.DEFINE_enum("strategy", "mirrored", ["mirrored", "multiworker", "tpu"],
                  "mirrored: the first --num_towers local GPUs (or --num_cpu_replicas "
                  "logical CPUs); multiworker: MultiWorkerMirroredStrategy over the first "
                  "--num_towers GPUs of each worker, cluster from TF_CONFIG; "
                  "tpu: TPUStrategy on --tpu.")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy tpu.")
flags.DEFINE_enum("cross_device_ops", "auto", ["auto", "nccl", "hierarchical_copy",
                                               "reduction_to_one"],
                  "How --strategy mirrored all-reduces the replicas' gradients. auto: NCCL on "
                  "GPUs (TensorFlow's reduction to one device on CPUs); hierarchical_copy or "
                  "reduction_to_one where NCCL fails (e.g. a Docker container without "
                  "--ipc=host or --shm-size). Named in the start line and config.json.")
flags.DEFINE_boolean("allow_cpu", False,
                     "Train on the CPU although this machine has an NVIDIA driver (nvidia-smi, "
                     "/proc/driver/nvidia) and TensorFlow sees no GPU. Without it that is an "
                     "error: usually TensorFlow was installed without CUDA (pip install -e "
                     "'.[gpu]').")
flags.DEFINE_integer("num_cpu_replicas", 0,
                     "CPU-only machines: split the CPU into this many logical devices and "
                     "train with that many replicas (tests the multi-replica path; no speed-up).",
                     lower_bound=0)
flags.DEFINE_boolean("demo", False,
                     "The CPU demo: demo-sized defaults for every flag not given (see "
                     "DEMO_DEFAULTS: 32x32, 10 classes, small networks, standing-statistics "
                     "sample grid, checkpoints for the learning curve, runs/demo), and if "
                     "--data_dir is omitted or holds no records, first write the generated "
                     "demo data set (sagan_tf.data.demo_data) there (default data/demo).")
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
                     "Let float32 convolutions and matmuls run in TF32 on GPUs that have it "
                     "(Ampere and newer; TensorFlow's default). Off: float32 as the release's "
                     "GPUs computed it (docs/NUMERICS.md). Recorded in config.json.")
flags.DEFINE_boolean("xla", False,
                     "XLA-compile each replica's G and D forward/backward passes (state "
                     "writes and the optimiser updates stay outside XLA).")
flags.DEFINE_integer("iterations_per_loop", 1,
                     "k > 1: run k training iterations in one compiled call (TPUEstimator's "
                     "name): one host round trip per k iterations, the same numbers bit for bit. "
                     "Summaries, progress lines and step-based checkpoints still come at their "
                     "steps (a call never runs past one; choose k dividing "
                     "--save_summaries_steps and --log_every_steps, or calls around them run "
                     "single iterations); time-based checkpoints and SIGTERM wait for the call "
                     "to end. Needs --on_nan stop. Tracing takes about k times as long, once.",
                     lower_bound=1)
flags.DEFINE_enum("mixed_precision", "none", ["none", "mixed_bfloat16", "mixed_float16"],
                  "Keras dtype policy of the networks' activations; weights, spectral norm, "
                  "batch-norm statistics, softmax, logits and losses stay float32. "
                  "mixed_float16 adds dynamic loss scaling.")
flags.DEFINE_enum("graph_optimization", "auto", ["auto", "full", "light"],
                  "Grappler settings of the compiled iteration. light: one optimisation round, "
                  "the passes that change nothing on a CPU off (a shorter first iteration; "
                  "rounding-level differences from full, docs/PERFORMANCE.md §6.1); full: "
                  "TensorFlow's default; auto: light on CPUs, full on GPUs/TPUs.")
flags.DEFINE_enum("attention", "release", ["release", "slide", "residual", "resnet_block"],
                  "release: the release's pooled attention (NUMERICS §3); slide: the "
                  "paper-slide variant (not the release); residual: the paper's Table 1 "
                  "'Residual' comparison block in place of attention (same parameter "
                  "count, no attention); resnet_block: one more same-resolution residual "
                  "block of the network's own type there (docs/REPRODUCING.md).")
flags.DEFINE_integer("attention_query_block_size", 0,
                     "Memory-efficient attention: process queries in blocks of this many "
                     "positions, recomputing each block's softmax in the backward pass "
                     "(same result; 0: the whole [B, N, N/4] map at once).", lower_bound=0)
flags.DEFINE_enum("sn_gradient", "release", ["release", "exact"],
                  "Backward pass of spectral normalisation. release: what the 2018 release "
                  "ran (its TF1 ref variable u was overwritten by u_new before the backward "
                  "pass, so the gradient of u @ W^T w.r.t. W used u_new); exact: the exact "
                  "gradient of W / sigma(W). Same forward pass. See docs/NUMERICS.md.")
# --- The paper's ablations (docs/REPRODUCING.md); the defaults are the release's networks.
flags.DEFINE_string("g_attention_resolutions", "",
                    "Feature-map sizes of G after which the attention (or --attention's "
                    "comparison) block goes, e.g. 16 or 16,32 (the paper's feat16...; G's "
                    "blocks output 8, 16, ..., image_size); 'none': no block. Empty: where "
                    "--generator_type puts it.")
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
                     "N > 0: besides samples_<step>.png (moving batch-norm statistics, the "
                     "release), write samples_<step>_standing_stats.png with standing "
                     "statistics: every batch norm's statistics averaged over N batches of G "
                     "in training mode (docs/DEVIATIONS.md; the checkpoint keeps the moving "
                     "averages).", lower_bound=0)
flags.DEFINE_boolean("collapse_summaries", True,
                     "At summary steps, also write collapse/: the largest singular value of "
                     "each spectral-norm layer (the sigma its spectral norm computed in the "
                     "iteration), G's and D's gradient norms and the share of real images D "
                     "scores positive (README, 'Collapse warnings'). Read-only: the iteration's "
                     "numbers are the same with --nocollapse_summaries.")
flags.DEFINE_float("g_ema_decay", 0.0,
                   "d > 0: also keep an exponential moving average of G's weights (BigGAN's "
                   "G_ema; bias-corrected: over about the last 1/(1-d) iterations, none of "
                   "it on the initial weights), checkpointed as "
                   "generator_ema; evaluation and the tools then use it by default "
                   "(--generator_weights). Not in the release (docs/DEVIATIONS.md); "
                   "0: off.", lower_bound=0.0, upper_bound=0.9999999)
flags.DEFINE_enum("on_nan", "stop", ["stop", "skip_step"],
                  "A non-finite loss or weight: stop (naming the step and loss; the last "
                  "checkpoint stays untouched) or skip_step (undo that iteration exactly and "
                  "go on with fresh inputs; gives up after 10 in a row).")

_DEMO_DIR = os.path.join("data", "demo")
#: --demo's settings for the flags not given on the command line: a run whose
#: samples become recognisably the 10 demo classes within about 10 minutes on
#: 2 CPU cores (README "Quickstart"; the measurements are in the README).
DEMO_DEFAULTS = {
    "image_size": 32, "number_classes": 10, "gf_dim": 8, "df_dim": 8, "batch_size": 32,
    "max_steps": 2500, "checkpoint_dir": os.path.join("runs", "demo"),
    "num_towers": 1, "log_every_steps": 100, "save_summaries_steps": 100,
    "save_checkpoint_steps": 500,
    "keep_checkpoint_max": 20, "standing_stats_batches": 16, "seed": 0,
    # The averaged generator: a short run's raw G swings from checkpoint to
    # checkpoint; its average over ~1000 iterations improves steadily (README).
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.demo:
        applied = _apply_demo_defaults()
        if applied:
            print("--demo settings: " + " ".join(f"--{k}={v}" for k, v in applied.items()),
                  flush=True)
    cli.quiet_tensorflow()
    # The replicas' devices (the first --num_towers GPUs, the others hidden;
    # or logical CPUs) must be set before TensorFlow runs any op.
    from sagan_tf.training import devices
    if FLAGS.strategy in ("mirrored", "multiworker"):
        devices.configure_training_devices(FLAGS.num_towers, FLAGS.allow_cpu,
                                           FLAGS.num_cpu_replicas)

    from sagan_tf.training.config import ConfigError, TrainConfig
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
        # Flags are named as the TrainConfig fields; a field without a flag
        # keeps its default.
        config = TrainConfig(**{f.name: getattr(FLAGS, f.name)
                                for f in dataclasses.fields(TrainConfig) if f.name in FLAGS})
        config = dataclasses.replace(config, data_dir=data_dir)
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
