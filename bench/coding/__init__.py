"""The sparse-coding benchmark: ``python -m bench.coding [--quick] [--sections NAME ...]``.

Each section module defines ``run(quick: bool) -> Section`` (rows, a markdown part, plots). Section
results are cached in ``bench/results/coding_parts/<name>.json`` so one section can be rerun alone;
every run reassembles ``bench/results/coding.json`` and ``coding.md`` from all cached parts.
"""
