"""sagan_tf.fileio.read_json_object and the config reader built on it (sagan_tf.rundir)."""
import pytest

from sagan_tf import rundir
from sagan_tf.fileio import read_json_object


def test_read_json_object_names_the_file(tmp_path):
    good, bad, not_object = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    good.write_text('{"gf_dim": 8}')
    bad.write_text('{"gf_dim": ')
    not_object.write_text("[1, 2]")
    assert read_json_object(str(good)) == {"gf_dim": 8}
    with pytest.raises(ValueError, match=f"{bad} is not valid JSON"):
        read_json_object(str(bad))
    with pytest.raises(ValueError, match=f"{not_object} does not hold a JSON object"):
        read_json_object(str(not_object))


def test_config_readers_differ_only_on_a_missing_file(tmp_path):
    # The evaluator may start before the trainer wrote config.json; sampling
    # needs the architecture and says where it comes from.
    config, path = rundir.read_config(str(tmp_path), required=False)
    assert config is None and path.endswith("config.json")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        rundir.read_config(str(tmp_path))
    (tmp_path / "config.json").write_text('{"z_dim": 16}')
    assert rundir.read_config(str(tmp_path), required=False)[0] == rundir.read_config(
        str(tmp_path))[0] \
        == {"z_dim": 16}
    (tmp_path / "config.json").write_text("nope")
    for required in (False, True):
        with pytest.raises(ValueError, match="is not valid JSON"):
            rundir.read_config(str(tmp_path), required=required)
