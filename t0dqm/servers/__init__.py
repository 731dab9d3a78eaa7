"""The HTTP endpoints: the upload server, the metrics exporter, the Flower guard."""
