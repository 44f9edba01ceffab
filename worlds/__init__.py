"""The worlds worldflow runs in: where runs are stored and how steps are queued.

``worldflow.worlds.local`` keeps everything on this machine; ``worldflow.worlds.aws``
and ``worldflow.worlds.gcp`` run on a cloud.
"""
