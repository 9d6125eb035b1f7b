"""The control plane: a FastAPI app over SQLModel that holds the mesh's
resources, keeps every revision, and (in later steps) compiles and pushes
each sidecar's data-plane config."""
