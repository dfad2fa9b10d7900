"""alignscope.analyses"""

from .faking_bench import faking_cli, run_faking_benchmark  # noqa: E402,F401
from .tradeoff import combine_runs, fit_tradeoff, pareto_front  # noqa: E402,F401  (the module keeps its name)
