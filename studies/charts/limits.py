"""How much of a study reaches the browser: the bounds the charts sample, bin or aggregate to.

At these limits a chart's JSON stays far below 2 MB whatever the study size
(NumPy arrays travel as base64). The charts read them as ``limits.NAME`` at
call time, so this module is the one place to change (or, in tests, patch) them.
"""

MAX_POINTS = 5_000  # markers in a scatter (history, Pareto front)
MAX_LINES = 2_000  # polylines in the parallel-coordinate plot
MAX_SLICE_POINTS = 1_500  # trials per slice subplot
MAX_SLICE_PARAMS = 12
MAX_PARALLEL_PARAMS = 30
MAX_CONTOUR_POINTS = 1_000
CONTOUR_BINS = 40
EDF_POINTS = 500
MAX_IMPORTANCE_TRIALS = 3_000  # completed trials PED-ANOVA is computed from
MAX_CURVES = 200  # intermediate-value curves drawn one by one
MAX_CURVE_POINTS = 50_000
CURVE_BINS = 300
MAX_TIMELINE_BARS = 1_000
HYPERVOLUME_CHECKPOINTS = 300
