"""The built-in trace store: OTLP/HTTP spans in (``otlp`` decodes them), stored
with a per-trace summary and kept by age and by count (``store``), read back
as trace lists and waterfalls (``query``); the tables and API shapes live in
``models``."""
