"""Experiments beyond a sweep's runs, built on the harness: the loss landscape between two solutions
(`experiments.landscape`) and the restart experiment (`experiments.restart`). `python -m analysis
landscape` runs them; `analysis` draws and checks what they write."""
