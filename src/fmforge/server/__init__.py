"""The HTTP server behind ``fmforge ui``: the runs pages and MLflow's tracking REST API."""
