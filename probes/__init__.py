"""alignscope.probes"""

# ---- alignment-faking detectors (owner: probes/faking) ----
from .faking import (  # noqa: E402, F401
    Detector,
    FakingError,
    ScenarioSet,
    behaviour_identical,
    get_detector,
    list_detectors,
    register_detector,
    run_detectors,
    score_against_reference,
)

# ---- refusal direction, selection, layer probes, studies (owner: probes/find, selection, layers, studies) ----
from .find import directions_cli, find_candidates, find_direction  # noqa: E402, F401
from .layers import LayerCurve, plot_layer_curve, probe_curve_from_acts, probe_layers  # noqa: E402, F401
from .selection import (  # noqa: E402, F401
    Candidates,
    SelectionError,
    SelectionResult,
    refusal_score,
    refusal_tokens_from_model,
    score_candidates,
    score_candidates_loop,
    select_candidate,
    substring_refusal,
)
from .studies import (  # noqa: E402, F401
    activation_space_study,
    aqi_layer_study,
    plot_activation_mso,
    plot_aqi_layers,
    plot_update_mso,
    projection_study,
    update_space_study,
)
