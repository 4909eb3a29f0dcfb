"""hloc integration, the one place that imports hloc: the extractor plugin, the zero-code
registration hook, the extract-features command and the named presets (no hloc needed)."""
