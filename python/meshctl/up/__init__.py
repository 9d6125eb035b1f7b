"""``meshctl up -f apps.yaml``: a local mesh from one compose file — an
embedded control plane, every app under ``meshctl run``, the mesh resources —
with prefixed logs, one status table, and an ordered stop (see ``runner``)."""
