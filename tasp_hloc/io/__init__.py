"""Files: image reading (hloc's rule), hloc's feature and match formats, the crash-safe HDF5
journal and atomic writes. Knows nothing of the network."""
