"""sagan_tf.fileio.read_json_object (the config reader built on it: tests/test_rundir.py)."""
import pytest

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
