"""The mesh's health check (``GET /api/v1/check``, ``meshctl check``): what is
wrong or at risk in the stored resources, the sidecars and the CA, each
finding with a stable code, a severity, the resource, a message and a hint.

The modules: ``codes`` (the catalogue of checks: standard library only, so the
CLI reads it without loading the control plane); ``report`` (the API's shapes);
``matches`` (whether one compiled route match takes every request of another);
``routes`` (shadowed rules, ignored routes, backends without endpoints);
``resources`` (dangling references, specs that no longer validate, PERMISSIVE
services); ``sidecars`` (sync, versions, revoked tokens, SVID expiry);
``identity`` (the CA's certificates and root rotation); ``run`` (all of it over
one database session). This file imports nothing, so importing ``codes`` stays
cheap.
"""
