"""``make bench``: side-by-side measurements, printed as ``RATIO <name> <value>`` lines."""
