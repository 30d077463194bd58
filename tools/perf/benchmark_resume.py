r"""Times positioning the unshuffled input pipeline for a resumed run.

For each --steps value: seconds from building the trainer's input iterator
(sagan_tf.data.pipeline.training_iterator, the positional start) to its first
batch, and, up to --max_naive_step, the same with the old way (the pipeline
read from its start and advanced with Dataset.skip). Prints one JSON line per
measurement.

  python tools/perf/benchmark_resume.py --data_dir data/demo --image_size 32 \
      --number_classes 10 --batch_size 32 --steps 0,1000,1000000
"""
import json
import time

from absl import flags

from sagan_tf import cli

flags.DEFINE_string("data_dir", None, "Directory of *.tfrecords.")
flags.DEFINE_integer("image_size", 32, "Stored image size.")
flags.DEFINE_integer("number_classes", 10, "Number of classes.")
flags.DEFINE_integer("batch_size", 32, "Per-replica batch size.")
flags.DEFINE_list("steps", ["0", "1000", "1000000"], "Resume steps to time.")
flags.DEFINE_integer("max_naive_step", 1000, "Also time the naive skip up to this step.")
flags.DEFINE_integer("repeats", 3, "Timings per measurement (the median is printed).")
flags.mark_flags_as_required(["data_dir"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    tf = cli.quiet_tensorflow()
    from sagan_tf.data import pipeline as data, record_format
    from sagan_tf.data.pipeline import training_iterator
    from sagan_tf.training.config import TrainConfig
    config = TrainConfig(data_dir=FLAGS.data_dir, image_size=FLAGS.image_size,
                         number_classes=FLAGS.number_classes, batch_size=FLAGS.batch_size,
                         seed=0, shuffle=False)
    strategy = tf.distribute.get_strategy()
    records = record_format.count_records(record_format.list_record_files(FLAGS.data_dir))

    def positional(step):
        next(training_iterator(config, strategy, step))

    def naive(step):
        ds = data.make_dataset(FLAGS.data_dir, FLAGS.image_size, FLAGS.batch_size,
                               FLAGS.number_classes, shuffle=False)
        next(iter(ds.skip(step)))

    positional(0)  # warm-up: the first tf.data use in the process
    for step in (int(s) for s in FLAGS.steps):
        for name, fn in (("positional", positional), ("naive_skip", naive)):
            if name == "naive_skip" and step > FLAGS.max_naive_step:
                continue
            times = []
            for _ in range(FLAGS.repeats):
                t0 = time.perf_counter()
                fn(step)
                times.append(time.perf_counter() - t0)
            print(json.dumps({"method": name, "step": step, "records": records,
                              "batch_size": FLAGS.batch_size,
                              "skipped_records": step * FLAGS.batch_size,
                              "median_seconds": round(sorted(times)[len(times) // 2], 4)}),
                  flush=True)


if __name__ == "__main__":
    cli.run(main)
