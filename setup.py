"""Packaging that setup.cfg cannot express: the weights and the hloc auto-registration hook.

- ``weights/`` stays the home of the released weights in the repository; it is installed as the
  data-only package ``tasp_hloc._weights`` (``package_dir`` mapping), so ``pip install .``, a
  wheel and an sdist all carry every file of it. An editable install reads ``weights/`` in place.
- ``tasp_hloc_autoregister.pth`` goes to the root of site-packages (wheel and editable installs):
  at interpreter start it installs a lazy import hook, ``tasp_hloc.hloc.autoregister``, that makes
  ``tasp`` an hloc extractor the first time hloc's modules are imported (see that module).
- The wheel carries ``tasp_hloc`` and ``pipelines`` only: ``tools/`` (the photo gatherer, run from
  the repository's root), ``benchmarks/`` and ``tests/`` stay in the repository.
"""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PTH = "tasp_hloc_autoregister.pth"


class build_py_with_pth(build_py):
    """build_py that also ships the .pth file at the root of the installed tree."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            # PEP 660 editable wheels keep only the finder and what the install commands write
            # into the unpacked wheel (install_lib), so the hook goes there.
            target = self.get_finalized_command("install").install_lib
        else:
            target = self.build_lib
        self.mkpath(target)
        self.copy_file(PTH, os.path.join(target, PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH))
        return outputs


setup(
    # benchmarks/ (the harness) and experiments/ (the studies on it) run from the checkout only
    packages=find_packages(include=["tasp_hloc", "tasp_hloc.*", "pipelines", "pipelines.*"])
    + ["tasp_hloc._weights"],
    package_dir={"tasp_hloc._weights": "weights"},
    package_data={
        "tasp_hloc": ["assets/demo/*", "train/configs/**/*.yaml"],
        "tasp_hloc._weights": ["*"],  # every file of weights/: manifest.json and the .pth files
    },
    cmdclass={"build_py": build_py_with_pth},
)
