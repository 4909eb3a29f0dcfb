"""Run a module like ``python -m`` and SIGKILL the process at a known point of its HDF5 writes.

    python tests/kill_at.py FILE_NAME N MODULE [ARGS...]

The process kills itself just before the N-th dataset is created in an HDF5 file named
FILE_NAME (any folder): the file is open for writing and an entry is half written, the state a
kill leaves at its worst. Used by the resume tests, so the kill point is the same every run
however loaded the machine is.
"""

import os
import runpy
import signal
import sys

import h5py


def main():
    name, n, module = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    sys.path.insert(0, os.getcwd())  # as `python -m` does
    create = h5py.Group.create_dataset
    count = 0

    def create_dataset(self, *args, **kwargs):
        nonlocal count
        if os.path.basename(self.file.filename) == name:
            count += 1
            if count == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return create(self, *args, **kwargs)

    h5py.Group.create_dataset = create_dataset
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
