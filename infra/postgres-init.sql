-- The MLflow backend store beside Prefect's database (created by POSTGRES_DB).
CREATE DATABASE mlflow;
-- The Optuna studies of the tune deployment (not in mlflow: both keep an alembic_version table).
CREATE DATABASE optuna;
