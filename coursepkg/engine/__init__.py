"""``coursepkg.engine``: running detectors — the training loop, checkpoints, devices and profiles.

:mod:`~coursepkg.engine.training` (``fit``, ``predict``, ``evaluate``),
:mod:`~coursepkg.engine.checkpoint` (atomic checkpoints and exact resume),
:mod:`~coursepkg.engine.runtime` (run profiles and the default device) and
:mod:`~coursepkg.engine.recipes` (each chapter's training settings per profile). The engine may
import every layer below it; nothing below imports the engine. This ``__init__`` re-exports
nothing.
"""
