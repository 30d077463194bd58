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


def _flags_of(script):
    """``{name: (default, choices or None, help)}`` of the flags ``script``
    defines (imported in a child process, as the scripts share flag names)."""
    import json
    import os
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (f"import json, {script[:-3]} as m; from absl import flags; "
            "print(json.dumps({f.name: (f.default, getattr(f.parser, 'enum_values', None), "
            "f.help) for f in flags.FLAGS.get_key_flags_for_module(m)}))")
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=repo, env=env).stdout
    return {name: tuple(v) for name, v in json.loads(out.splitlines()[-1]).items()}


def test_every_train_flag_is_its_config_field_and_every_field_has_a_flag():
    """train_imagenet.py's flags and TrainConfig: the same names, defaults and
    choices (sagan_tf/options.py), and a one- or two-line help each."""
    import dataclasses

    from sagan_tf import options
    script_flags = _flags_of("train_imagenet.py")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(script_flags) - set(fields) == {"demo"}  # --demo: the script's own
    assert set(fields) - set(script_flags) == set()
    defaults = TrainConfig()
    for name, (flag_default, choices, text) in script_flags.items():
        text = text.split(">: ", 1)[1] if choices else text  # absl's "<a|b>: " prefix
        assert len(text) <= 160, (name, len(text))  # about two lines of --help
        if name == "demo":
            continue
        default = getattr(defaults, name)
        if name.endswith("_attention_resolutions"):  # the flag's "" is the field's None
            assert flag_default == "" and default is None, name
        else:
            assert flag_default == default, (name, flag_default, default)
        assert choices == (list(options.TRAIN_CHOICES[name]) if name in options.TRAIN_CHOICES
                           else None), name


def test_options_and_config_load_without_tensorflow():
    """The entry script reads the options before TensorFlow loads."""
    import subprocess
    import sys
    code = ("import sys; import sagan_tf.options, sagan_tf.training.config; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_every_eval_flag_is_its_option_field():
    """eval_imagenet.py's flags and EvalOptions: the same names and defaults;
    the one field without a flag is named here."""
    import dataclasses

    from sagan_tf.evaluation.evaluator import EvalOptions
    script_flags = _flags_of("eval_imagenet.py")
    fields = {f.name: f for f in dataclasses.fields(EvalOptions)}
    assert set(fields) - set(script_flags) == {"shuffle_buffer_size"}  # programmatic only
    defaults = EvalOptions()
    for name in set(fields) & set(script_flags):
        assert script_flags[name][0] == getattr(defaults, name), name
