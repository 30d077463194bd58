"""The evaluator's command-line flags (``eval_imagenet.py``, ``tools/truncation_sweep.py``)
and the :class:`~sagan_tf.evaluation.evaluator.EvalOptions` they give."""

from absl import flags

from sagan_tf import cli

#: The flags :func:`define_eval_flags` defines besides the generator-weights and device flags.
EVAL_FLAG_NAMES = (
    "checkpoint_dir",
    "eval_dir",
    "eval_sample_size",
    "dcgan_generator_batch_size",
    "eval_interval_secs",
    "num_classes",
    "generator_type",
    "z_dim",
    "gf_dim",
    "image_size",
    "data_dir",
    "batch_size",
    "inception_path",
    "checkpoint_path",
    "timeout",
    "max_evals",
    "num_real_samples",
    "real_data_dir",
    "real_split",
    "seed",
    "intra_fid_samples_per_class",
    "standing_stats_batches",
    "standing_stats_batch_size",
    "manifold_metrics",
    "manifold_num_samples",
    "truncation",
)


def define_eval_flags(flag_values=None, _depth=1):
    """Defines every flag of the evaluator on ``flag_values`` (default: absl's
    global ``FLAGS``), as key flags of the calling script."""
    fv = flags.FLAGS if flag_values is None else flag_values
    _define_schedule_flags(fv)
    _define_run_flags(fv)
    _define_reference_flags(fv)
    _define_measurement_flags(fv)
    cli._register_key_flags(fv, EVAL_FLAG_NAMES, _depth)  # pylint: disable=protected-access
    cli.define_generator_weights_flag(fv, _depth=_depth + 1)
    cli.define_device_flags(fv, _depth=_depth + 1)


def options_from_flags(flag_values=None):
    """Builds :class:`sagan_tf.evaluation.evaluator.EvalOptions` from the parsed flags."""
    from sagan_tf.evaluation import (
        evaluator as evaluation,
    )  # pylint: disable=import-outside-toplevel

    fv = flags.FLAGS if flag_values is None else flag_values
    return evaluation.EvalOptions(
        **{name: fv[name].value for name in EVAL_FLAG_NAMES}, generator_weights=fv.generator_weights
    )


def _define_schedule_flags(fv):
    """Where the run and the results are, how many samples, how often."""
    flags.DEFINE_string(
        "checkpoint_dir",
        None,
        "Training checkpoint root (the --checkpoint_dir of "
        "train_imagenet.py; the run is <checkpoint_dir>/imagenet_<batch_size>).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "eval_dir",
        None,
        "Where summaries, evaluated.json and the cached real "
        "activations go (default <checkpoint_dir>/eval).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "eval_sample_size", 50000, "Number of generated samples per evaluation.", flag_values=fv
    )
    flags.DEFINE_integer(
        "dcgan_generator_batch_size", 100, "Generation batch size.", flag_values=fv
    )
    flags.DEFINE_integer(
        "eval_interval_secs", 300, "Minimum seconds between evaluation rounds.", flag_values=fv
    )


def _define_run_flags(fv):
    """The run's architecture (default: config.json), data, classifier, which checkpoints."""
    flags.DEFINE_integer(
        "num_classes", None, "Number of classes (default: from config.json).", flag_values=fv
    )
    flags.DEFINE_string(
        "generator_type", None, "test | baseline | test_64 (default: config.json).", flag_values=fv
    )
    flags.DEFINE_integer(
        "z_dim", None, "Noise dimension (default: from config.json).", flag_values=fv
    )
    flags.DEFINE_integer(
        "gf_dim", None, "Generator width (default: from config.json).", flag_values=fv
    )
    flags.DEFINE_integer(
        "image_size", None, "Image size (default: from config.json).", flag_values=fv
    )
    flags.DEFINE_string(
        "data_dir",
        None,
        "Training records for the real statistics (default: data_dir of config.json).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "batch_size",
        None,
        "Training per-replica batch size: picks the run "
        "<checkpoint_dir>/imagenet_<batch_size>. Default: the only imagenet_* run "
        "in --checkpoint_dir.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "inception_path",
        None,
        "Local SavedModel / TF-Hub module directory of "
        "the classifier (default: the TF-GAN Inception on TF-Hub).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "checkpoint_path", None, "Evaluate this one checkpoint and exit.", flag_values=fv
    )
    flags.DEFINE_float(
        "timeout",
        None,
        "Stop after this many seconds without a new checkpoint (default: wait forever).",
        flag_values=fv,
    )
    flags.DEFINE_integer("max_evals", None, "Stop after this many evaluations.", flag_values=fv)


def _define_reference_flags(fv):
    """Where the real statistics come from."""
    flags.DEFINE_string(
        "real_data_dir",
        None,
        "Records of the real statistics (default: --data_dir), e.g. a directory "
        "of validation records written by tools/convert_imagenet_to_records.py.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "real_split",
        None,
        "Split of the real statistics: the record files <split>-*.tfrecords of "
        "--real_data_dir (e.g. train, validation). Default: every *.tfrecords file.",
        flag_values=fv,
    )


def _define_measurement_flags(fv):
    """Real samples, seed, intra-FID, batch-norm statistics, manifold metrics, truncation."""
    flags.DEFINE_integer(
        "num_real_samples",
        None,
        "Reference records for the real statistics (float64 mean and covariance, "
        "cached): this many shuffled records (default: --eval_sample_size; the "
        "release: 50,000 training records), or 0 for the whole split once.",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "seed", None, "Seed of the noise, labels and real-data shuffle.", flag_values=fv
    )
    flags.DEFINE_integer(
        "intra_fid_samples_per_class",
        0,
        "Intra-FID (the paper's Table 2): the mean over classes of the FID between "
        "this many samples generated for a class and as many real records of that "
        "class (per-class real statistics cached under --eval_dir). 0: off (the "
        "default). Exact low-rank form when this is below the 2048 features: "
        "seconds for ImageNet's 1000 classes. "
        "The paper does not state its count; e.g. 50 on ImageNet.",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "standing_stats_batches",
        0,
        "0: G samples with its moving batch-norm statistics (the release). N > 0: "
        "standing statistics: after each restore, every batch norm's statistics "
        "are recomputed as the average over N batches of G in training mode "
        "(BigGAN/compare_gan; a deviation, docs/DEVIATIONS.md). The JSON line's "
        "bn_statistics says which.",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "standing_stats_batch_size",
        None,
        "Batch size of the standing-statistics batches (default: the training "
        "batch_size of config.json).",
        lower_bound=1,
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "manifold_metrics",
        True,
        "Report precision and recall (Kynkaanniemi et al. 2019, k=3) and density "
        "and coverage (Naeem et al. 2020, k=5) of the generated against the real "
        "pool_3 features, in the JSON line and under eval/ (not the paper's "
        "protocol; --nomanifold_metrics turns them off).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "manifold_num_samples",
        10000,
        "Samples of each set for the manifold metrics (0: as many as FID); the "
        "JSON line's manifold_num_samples states the count used.",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_float(
        "truncation",
        None,
        "Truncation trick (BigGAN; not the paper's protocol, which samples z ~ "
        "N(0, 1)): every z component with |z| > this is redrawn until inside. The "
        "JSON line's truncation names it; summaries and evaluated.json go to "
        "<eval_dir>/truncation_<value>. Default: off.",
        lower_bound=0.0,
        flag_values=fv,
    )
