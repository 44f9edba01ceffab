"""A host's limit on one step attempt (Lambda's function timeout, Cloud Run's request
timeout) against the steps' own timeouts.

A step attempt longer than its host allows is cut off by the host, not by the
engine: the attempt is lost and runs again once its worker's lease has run
out, and every attempt is cut off the same way. A step whose ``timeout`` is
longer than the host's limit is therefore a mistake, refused when a World's
package is built and warned about when a worker starts.
"""

from __future__ import annotations

from ._definitions import _STEPS
from ._duration import format_duration

__all__ = ["step_limit_problems"]


def step_limit_problems(limit: float, host: str) -> list[str]:
    """One line per registered step whose timeout is longer than ``limit`` seconds,
    the longest one attempt may take on ``host`` (e.g. "Lambda's function timeout")."""
    return [
        f"step {name!r} has timeout={format_duration(step.options.timeout)}, longer than "
        f"{host} ({format_duration(limit)}): the host would cut every attempt off; "
        f"give it a timeout of at most {format_duration(limit)} or raise the host's limit"
        for name, step in sorted(_STEPS.items())
        if step.options.timeout is not None and step.options.timeout > limit
    ]
