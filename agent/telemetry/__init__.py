"""On-device telemetry: per-inference accounting (``accumulator``), windows and their assembly
(``service``), system metrics (``system``), the store-and-forward queue (``queue``), the QoS 1
publisher (``publisher``) and the reference profile kept with each model (``profiles``)."""
