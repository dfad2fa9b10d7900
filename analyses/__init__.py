"""alignscope.analyses"""

from .tradeoff import fit_tradeoff, pareto_front, tradeoff  # noqa: E402,F401
