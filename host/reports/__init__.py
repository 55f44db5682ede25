"""Renderings for the CLI of what runs on the site simulator: forecasts, fault risk and
allocation plans, as text, JSON and PNG."""
