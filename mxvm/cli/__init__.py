"""The `mxvm` command line."""
