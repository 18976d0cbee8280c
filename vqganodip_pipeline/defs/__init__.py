import warnings

import dagster as dg

# Data versions from content are what makes staleness exact here (defs/versions.py): the assets
# use Dagster's beta `data_version` on purpose; said once here instead of at every output.
warnings.filterwarnings("ignore", message="Parameter `data_version`", category=dg.BetaWarning)
# Checks of partitioned assets check one partition each (without a partitions_def Dagster hands
# them every partition at once); that is a preview feature of Dagster 1.13, used on purpose.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)
