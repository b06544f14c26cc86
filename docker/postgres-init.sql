-- Databases for Dagster's storage and for the analytics sink (which also holds the DLQ).
CREATE USER dagster WITH PASSWORD 'dagster';
CREATE DATABASE dagster OWNER dagster;
CREATE USER analytics WITH PASSWORD 'analytics';
CREATE DATABASE analytics OWNER analytics;
