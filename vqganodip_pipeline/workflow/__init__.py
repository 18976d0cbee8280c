"""The method's orchestration steps over the library layers, shared by the Dagster assets, the
``vqganodip evaluate`` command and the demo (no Dagster here).

- roles: rows of a dataset split by role, ground-truth masks, the golden sample
- scoring: the shipped composite model, the paper and honest protocols, the holdout check
- report: the evaluation report dict, its targets and figures, production latency
"""
