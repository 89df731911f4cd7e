"""Predictions per customer: BG/NBD and Gamma-Gamma fitted on the shop's completed orders."""
