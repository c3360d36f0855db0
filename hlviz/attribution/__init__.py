"""Attribution that refuses to silently lie: Captum methods, sanity checks, TCAV."""

from . import concepts, core, forward, methods, plots, registry, sanity
from .concepts import TCAVReport, tcav
from .core import Attribution, attribute
from .forward import (
    ModelForward,
    Prepared,
    Probe,
    auto_rows,
    check_target,
    parse_budget,
    prepare,
    probe,
    rnn_safe,
    scores,
    token_baseline,
)
from .methods import METHODS, baseline_for
from .plots import plot_attribution_images, plot_over_time
from .registry import Method, register
from .sanity import SanityReport, sanity_check

__all__ = [
    "METHODS",
    "Attribution",
    "Method",
    "ModelForward",
    "Prepared",
    "Probe",
    "SanityReport",
    "TCAVReport",
    "attribute",
    "auto_rows",
    "baseline_for",
    "check_target",
    "concepts",
    "core",
    "forward",
    "methods",
    "parse_budget",
    "plot_attribution_images",
    "plot_over_time",
    "plots",
    "prepare",
    "probe",
    "register",
    "registry",
    "rnn_safe",
    "sanity",
    "sanity_check",
    "scores",
    "tcav",
    "token_baseline",
]
