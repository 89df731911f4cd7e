"""Segments from purchase history: RFM, retention stages, advocacy and custom segments."""
