"""Ray orchestration in three wings.

cluster.py, convert.py, describe.py      a local or remote Ray cluster; Ray Data conversion
                                         and description of episode sources
plan.py, tokenize_*.py                   `hma tokenize`: episode sources -> token store
store/                                   the token store (zarr v3, local or s3://)
pretrain/                                `hma pretrain`: Ray Train on token stores
"""
