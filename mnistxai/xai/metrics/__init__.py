"""Quantitative evaluation of attribution maps: faithfulness, robustness, complexity, sanity,
localisation.

Every metric takes plain arrays and callables (a model's ``score_fn``, or an ``explain_fn`` for
the metrics that re-explain), is jit-compiled over the batch and returns one value per example:

==========================  ==========================  =======  ===============================
metric                      function                    better   reference
==========================  ==========================  =======  ===============================
deletion AUC                ``deletion``                lower    Petsiuk et al. 2018 (RISE)
insertion AUC               ``insertion``               higher   Petsiuk et al. 2018 (RISE)
region perturbation MoRF    ``region_perturbation``     higher   Samek et al. 2017; Bach 2015
region perturbation LeRF    ``region_perturbation``     lower    Samek et al. 2017
faithfulness correlation    ``faithfulness_correlation`` higher  Bhatt et al. 2020
infidelity                  ``infidelity``              lower    Yeh et al. 2019
max-sensitivity             ``max_sensitivity``         lower    Yeh et al. 2019
sparseness (Gini)           ``sparseness``              higher   Chalasani et al. 2020
complexity (entropy)        ``complexity``              lower    Bhatt et al. 2020
parameter randomization     ``model_parameter_randomization``  lower  Adebayo et al. 2018
pointing game               ``pointing_game``           higher   Zhang et al. 2018
attribution localisation    ``attribution_localisation`` higher  Kohlbrenner et al. 2020
top-k intersection          ``top_k_intersection``      higher   Theiner et al. 2022
relevance mass accuracy     ``relevance_mass_accuracy`` higher   Arras et al. 2022
relevance rank accuracy     ``relevance_rank_accuracy`` higher   Arras et al. 2022
localisation AUC            ``auc``                     higher   Fawcett 2006
==========================  ==========================  =======  ===============================

The rest of Quantus 0.6's metrics live one per module and are imported from there (e.g.
``from mnistxai.xai.metrics.road import road``): road, irof, selectivity, sensitivity_n,
monotonicity, monotonicity_correlation, faithfulness_estimate, sufficiency (faithfulness);
avg_sensitivity, local_lipschitz, continuity, relative_stability, consistency (robustness);
effective_complexity, mst_c (complexity); random_logit, and efficient_mprt and smooth MPRT in
randomization (sanity); completeness, non_sensitivity, input_invariance (axiomatic); focus
(localisation). ``METRICS`` lists every
registered one.

The localisation metrics take ground-truth masks as well as maps; the leaderboard runs them only
when it is given masks.

``faithfulness_drops`` and ``infidelity_drops`` make the model calls of those two metrics once,
to score many maps of the same images (``drops=``). ``baselines`` gives the random and Sobel-edge
reference maps. Each family module also registers its leaderboard entries (``registry``:
name, columns with their direction, options, random stream); ``mnistxai.pipelines.evaluate`` runs
every registered metric over an explanation run and writes the leaderboard.
"""

import importlib
import pkgutil

from mnistxai.xai.metrics._common import average_ranks, pearson, spearman
from mnistxai.xai.metrics.baselines import (
    BASELINES,
    baseline_explain_fn,
    baseline_maps,
    random_attribution,
    sobel_attribution,
)
from mnistxai.xai.metrics.complexity import complexity, sparseness
from mnistxai.xai.metrics.faithfulness import (
    deletion,
    faithfulness_correlation,
    faithfulness_drops,
    infidelity,
    infidelity_drops,
    insertion,
    region_perturbation,
    trapezoid_auc,
)
from mnistxai.xai.metrics.localisation import (
    attribution_localisation,
    auc,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_intersection,
)
from mnistxai.xai.metrics.randomization import (
    CASCADE,
    cascading_randomization,
    model_parameter_randomization,
    ssim,
)
from mnistxai.xai.metrics.registry import (
    METRICS,
    Batch,
    Metric,
    columns,
    default_metrics,
    register_metric,
)
from mnistxai.xai.metrics.robustness import max_sensitivity

for _module in pkgutil.iter_modules(__path__):  # every module's leaderboard entries register
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BASELINES",
    "Batch",
    "CASCADE",
    "METRICS",
    "Metric",
    "attribution_localisation",
    "auc",
    "average_ranks",
    "baseline_explain_fn",
    "baseline_maps",
    "cascading_randomization",
    "columns",
    "complexity",
    "default_metrics",
    "deletion",
    "faithfulness_correlation",
    "faithfulness_drops",
    "infidelity",
    "infidelity_drops",
    "insertion",
    "max_sensitivity",
    "model_parameter_randomization",
    "pearson",
    "pointing_game",
    "random_attribution",
    "region_perturbation",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "register_metric",
    "sobel_attribution",
    "sparseness",
    "spearman",
    "ssim",
    "top_k_intersection",
    "trapezoid_auc",
]
