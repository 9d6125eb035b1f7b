"""Live views (``meshctl stat``, ``top``, ``edges`` and the dashboard's graph):
golden metrics per service, route and edge, aggregated from the counters each
sidecar's data plane keeps (``DataPlane.telemetry()``).

Sidecars push those counters with their heartbeats; the control plane does not
scrape them. A heartbeat already goes out every ttl/3 seconds from every
sidecar, through whatever NAT or firewall lets the sidecar reach its control
plane, so the numbers work across hosts without opening a port towards any
sidecar; admin ports stay bound to loopback; and the control plane needs no
scrape fan-out (no per-sidecar connections, timeouts or discovery of its own)
to keep up with a growing mesh. The cost is resolution: deltas arrive once per
heartbeat, so the views are for windows of tens of seconds and more.

- ``report``: the telemetry a heartbeat carries, validated with bounds.
- ``store``: deltas of those cumulative counters, in time bins kept for an hour.
- ``views``: the API's rows (services, routes, edges, series) from the bins.
"""
