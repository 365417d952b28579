"""The server's routes, one module per domain, each an ``APIRouter`` named ``router``:
``pages`` (the dashboard's static pages and a run's report), ``runs`` (the JSON the dashboard
reads), ``models`` (weight changes between commits), ``mlflow`` (MLflow's tracking API)."""
