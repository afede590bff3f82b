"""The dashboard's tabs, one module each; `modelforge_ui.dashboard` puts them together."""
