"""Supervisors around the data plane: config sources, reloads, signals."""
