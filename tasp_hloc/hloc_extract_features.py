"""The command ``python -m tasp_hloc.hloc_extract_features``: hloc's ``extract_features`` with
TaSP registered, for when the zero-code hook is off. Its code is :mod:`tasp_hloc.hloc.extract_features`;
this module keeps the documented command name."""

from .hloc.extract_features import main

if __name__ == "__main__":
    main()
