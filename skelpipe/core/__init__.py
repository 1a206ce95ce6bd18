"""Foundations every stage uses: one-line errors, the console, device choice, atomic writes."""
