"""Reference pages made at build time from the code itself: the CLI (the typer app's command tree),
the REST API (``api/openapi.json``) and the data-plane config (``meshctl.dataplane_config``).

Each generator returns Markdown text and imports nothing of mkdocs, so tests run them without it;
``docs/hooks.py`` hands their pages to mkdocs.
"""
