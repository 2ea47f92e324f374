-- Job settings changed at run time (issue 13: "the maximum number of jobs
-- per worker"), by name; `[jobs]` in gateway.toml gives a value until one is
-- stored here. Shared by the gateways on one store.
CREATE TABLE IF NOT EXISTS job_settings (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
