"""Data in: calibration and evaluation sets, one module per format or built-in set.

Adapters receive decoded samples from here and turn them into feeds.  Built-in sets:
:mod:`shapes` (procedural coloured shapes, the demo model's task) and :mod:`synthetic_audio`
(deterministic tones, chirps and noises, the CLAP task).
"""
