"""Apps turn readings and frames into events and actuations. Apps never talk MQTT."""
