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

# isort: split
# ---- tensor-level maths: cluster indices/AQI, subspaces/MSO, directions (owner: probes/cluster, subspace, direction(s)) ----
from .cluster import (  # noqa: E402, F401
    aqi_bootstrap,
    aqi_cohort,
    aqi_dbs_di,
    aqi_per_layer,
    aqi_pooled,
    aqi_xb_chi,
    calinski_harabasz,
    cluster_scores,
    davies_bouldin,
    dunn,
    dunn_parts,
    pool_layers,
    xie_beni,
)
from .direction import Direction  # noqa: E402, F401
from .directions import (  # noqa: E402, F401
    LinearProbe,
    auroc,
    auroc_ci,
    diff_of_means,
    extract_direction,
    get_extractor,
    list_extractors,
    logistic_probe,
    mean_representation,
    pca_direction,
    register_extractor,
)
from .subspace import (  # noqa: E402, F401
    activation_mso,
    activation_mso_per_layer,
    apply_update,
    energy_basis,
    energy_rank,
    mso,
    mso_report,
    paper_layer_window,
    project_update,
    project_updates,
    reshape2d,
    top_left_singular,
    update_mso,
    weight_deltas,
)
