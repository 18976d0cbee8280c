"""Asset keys: every asset of the code location lives under the ``vqganodip`` prefix, so that it
sits beside other projects' assets in one Dagster deployment without a clash. Assets are written
with their plain names and prefixed when the definitions are assembled (op names, and so run
config keys, stay the plain names)."""

import dagster as dg

PREFIX = "vqganodip"


def key(name: str) -> dg.AssetKey:
    """The key of asset ``name``, e.g. ``vqganodip/batch_scores``."""
    return dg.AssetKey([PREFIX, name])


def name_of(asset_key: dg.AssetKey) -> str:
    """The plain name of a key of this code location (its last component)."""
    return asset_key.path[-1]
