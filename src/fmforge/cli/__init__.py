"""The ``fmforge`` command line: thin adapters over the library."""
