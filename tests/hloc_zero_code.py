"""An hloc script that never names this package: it must find TaSP by name alone.

    python tests/hloc_zero_code.py IMAGE_DIR EXPORT_DIR

Run by tests/hloc_plugin/test_hloc_autoregister.py and by CI (against the installed wheel and the hloc
stand-in of tests/hloc_standin.py) from a folder outside the checkout.
"""

import sys
from pathlib import Path

assert "torch" not in sys.modules, "torch was imported at start-up"

import h5py  # noqa: E402
import hloc.extractors  # noqa: E402
from hloc import extract_features  # noqa: E402
from hloc.utils.base_model import dynamic_load  # noqa: E402

Model = dynamic_load(hloc.extractors, "tasp")
print("MODEL", Model.__module__, Model.__name__)
print("CONFS", sorted(k for k in extract_features.confs if k.startswith("tasp")))
out = extract_features.main(
    extract_features.confs["tasp_aachen"], Path(sys.argv[1]), Path(sys.argv[2])
)
with h5py.File(out, "r") as fd:
    name = sorted(fd.keys())[0]
    n = fd[name]["keypoints"].shape[0]
    print("KEYPOINTS", name, n, Path(out).name)
assert n > 0
