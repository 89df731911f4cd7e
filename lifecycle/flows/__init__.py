"""Flows: declarative journeys written by CRM managers in ``flows/*.yaml``."""
