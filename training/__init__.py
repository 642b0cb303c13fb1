"""Training package for the NullSwap cloaking network (repo-only; not installed with the SDK).

Run ``python -m training.train --out runs/NAME [--config cfg.json] [--set key=value ...]``.
"""
