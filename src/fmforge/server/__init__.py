"""The HTTP server behind ``fmforge ui``: the runs pages, the JSON they read, and MLflow's
tracking REST API (``create_app`` in ``app``; routes in ``routers/``)."""
