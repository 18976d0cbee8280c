

import warnings

import dagster as dg

# Data versions from content are what makes staleness exact here (defs/versions.py): the assets
# use Dagster's beta `data_version` on purpose; said once here instead of at every output.
warnings.filterwarnings("ignore", message="Parameter `data_version`", category=dg.BetaWarning)
