"""Formats one part writes and another reads, each defined once: the feature log (serving -> monitoring), the
retrain request (monitoring -> training) and Feast's Redis layout (materialization -> serving)."""
