"""The writer layer: command data in, text / JSON / Prometheus / HTML out."""
