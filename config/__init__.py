"""Quench configuration: settings from the environment and the names shared by every part."""
