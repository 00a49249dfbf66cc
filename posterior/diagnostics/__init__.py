"""Diagnostics: ArviZ conversion, calibration, distances, plots and reports."""
