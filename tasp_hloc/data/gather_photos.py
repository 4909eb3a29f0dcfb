"""The photo gatherer's command, ``python -m tasp_hloc.data.gather_photos --output ~/tasp_photos``
(see :mod:`tasp_hloc.data.photos` for what it does). The code lives in the package
:mod:`tasp_hloc.data.photos`, one concept per module; this module runs its
:func:`~tasp_hloc.data.photos.gather.main` and re-exports the public names for the code that
imports them from here. Rebinding a name here changes nothing in the package: to replace the
sources of a run, patch ``tasp_hloc.data.photos.gather.SOURCES``."""

from __future__ import annotations

import sys

from .photos.archives import (
    EET_MAGIC_FILE2,
    RCC_COMPRESSED,
    RCC_COMPRESSED_ZSTD,
    RCC_DIRECTORY,
    RccError,
    read_eet,
    read_rcc,
)
from .photos.container_sources import (
    ENLIGHTENMENT_PHOTOS,
    GCOMPRIS_NOT_PHOTO,
    source_enlightenment,
    source_gcompris,
)
from .photos.credits import credit_lookup, dep5_lookup, parse_credit_stanzas
from .photos.debian_sources import (
    IMAGE_LIKE,
    LOMIRI_NOT_PHOTOS,
    PHOTO_EXTENSIONS,
    source_libjxl,
    source_lomiri,
    source_palapeli,
)
from .photos.gather import (
    DEFAULT_CACHE,
    REPO_ROOT,
    SOURCES,
    admit,
    gather,
    main,
    process_source,
)
from .photos.licences import LicenceVerdict, classify_licence
from .photos.manifest import (
    DROPPED_FIELDS,
    MANIFEST_FIELDS,
    Candidate,
    Dropped,
    SourceResult,
    read_manifest,
    sha256,
    write_csv,
    write_manifest,
)
from .photos.packages import PyPIPackage, debian_package
from .photos.python_sources import (
    SKIMAGE_NOT_PHOTOS,
    SKIMAGE_PHOTOS,
    source_scipy,
    source_skimage,
    source_sklearn,
)

__all__ = [
    # licences
    "LicenceVerdict",
    "classify_licence",
    # archives
    "RccError",
    "RCC_COMPRESSED",
    "RCC_DIRECTORY",
    "RCC_COMPRESSED_ZSTD",
    "read_rcc",
    "EET_MAGIC_FILE2",
    "read_eet",
    # credits
    "parse_credit_stanzas",
    "dep5_lookup",
    "credit_lookup",
    # manifest
    "MANIFEST_FIELDS",
    "DROPPED_FIELDS",
    "Candidate",
    "Dropped",
    "SourceResult",
    "write_csv",
    "write_manifest",
    "read_manifest",
    "sha256",
    # packages
    "debian_package",
    "PyPIPackage",
    # sources
    "PHOTO_EXTENSIONS",
    "IMAGE_LIKE",
    "GCOMPRIS_NOT_PHOTO",
    "ENLIGHTENMENT_PHOTOS",
    "LOMIRI_NOT_PHOTOS",
    "SKIMAGE_PHOTOS",
    "SKIMAGE_NOT_PHOTOS",
    "source_gcompris",
    "source_enlightenment",
    "source_lomiri",
    "source_libjxl",
    "source_palapeli",
    "source_skimage",
    "source_sklearn",
    "source_scipy",
    # the run
    "REPO_ROOT",
    "DEFAULT_CACHE",
    "SOURCES",
    "admit",
    "process_source",
    "gather",
    "main",
]

if __name__ == "__main__":
    sys.exit(main())
