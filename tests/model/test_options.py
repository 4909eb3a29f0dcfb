"""The one option merge (tasp_hloc.options.with_defaults) and the classes that now share it."""

import pytest
from omegaconf import OmegaConf

from tasp_hloc.options import UnknownOptionError, with_defaults

DEFAULT = {"size": 256, "photometric": {"enable": False, "gain": 0.2}, "free": {}}


def test_merges_recursively_and_keeps_unset_defaults():
    out = with_defaults(DEFAULT, {"photometric": {"enable": True}, "free": {"any": 1}}, "Set")
    assert out == {"size": 256, "photometric": {"enable": True, "gain": 0.2}, "free": {"any": 1}}
    assert DEFAULT["photometric"] == {"enable": False, "gain": 0.2}  # defaults untouched


def test_unknown_key_is_both_key_and_value_error_naming_the_path():
    with pytest.raises(UnknownOptionError, match=r"Unknown Set.photometric options \['gian'\]"):
        with_defaults(DEFAULT, {"photometric": {"gian": 0.1}}, "Set")
    for error in (KeyError, ValueError):
        with pytest.raises(error, match=r"\['sise'\]; valid: \['free', 'photometric', 'size'\]"):
            with_defaults(DEFAULT, {"sise": 1}, "Set")


def test_omegaconf_nodes_resolved_and_none():
    root = OmegaConf.create({"base": 128, "data": {"size": "${base}"}})
    assert with_defaults(DEFAULT, root.data, "Set")["size"] == 128
    assert with_defaults(DEFAULT, None, "Set") == DEFAULT


def test_labeler_rejects_a_misspelt_option():
    from tasp_hloc.labels.labeler import Labeler

    with pytest.raises(ValueError, match="Unknown Labeler options"):
        Labeler({"resize_maxx": 640})


def test_tasp_takes_hlocs_name_key_and_rejects_typos():
    from tasp_hloc.model.tasp import TaSP

    assert "name" not in TaSP({"name": "tasp", "weights": None}).conf
    with pytest.raises(KeyError, match="max_keypoint"):
        TaSP({"max_keypoint": 10, "weights": None})
