"""The Google Cloud world (needs the ``worldflow[gcp]`` extra).

Not implemented yet: this package is a placeholder so that the name exists.
"""
