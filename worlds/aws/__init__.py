"""The AWS world (needs the ``worldflow[aws]`` extra).

Not implemented yet: this package is a placeholder so that the name exists.
"""
