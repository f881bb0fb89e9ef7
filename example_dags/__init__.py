"""Example DAGs for airflow-provider-kling (each runs with `airflow dags test` against the simulator)."""
