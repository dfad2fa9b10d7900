"""alignscope.analyses"""

from .faking_bench import faking_cli, run_faking_benchmark  # noqa: E402,F401
from .tradeoff import fit_tradeoff, pareto_front, tradeoff  # noqa: E402,F401
