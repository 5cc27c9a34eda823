-- The MLflow backend store beside Prefect's database (created by POSTGRES_DB).
CREATE DATABASE mlflow;
