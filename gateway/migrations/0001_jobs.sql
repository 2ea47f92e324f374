-- Durable jobs (issue 13): one schema for SQLite and PostgreSQL.
-- Portable types only: BIGINT (numbers, ms since the Unix epoch, 0/1
-- flags), TEXT (names, JSON maps), BYTEA (bytes; SQLite keeps a blob as it
-- is under that type name). No AUTOINCREMENT or SERIAL: job ids come from
-- the gateway, sequence numbers from the counters in `jobs`.

CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    template TEXT,
    -- JobState::as_str ("waiting", "running", "timed_out", ...).
    state TEXT NOT NULL,
    tenant TEXT,
    priority BIGINT NOT NULL,
    realtime BIGINT NOT NULL,
    watchdog_s BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    idempotent BIGINT NOT NULL,
    node TEXT,
    -- The gateway that holds the running attempt, and until when (ms).
    owner TEXT,
    lease_until_ms BIGINT,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT,
    error TEXT,
    result_len BIGINT,
    payload BYTEA NOT NULL,
    -- JSON objects of strings.
    hints TEXT NOT NULL,
    labels TEXT NOT NULL,
    -- The last transition's and the last log line's seq.
    trans_seq BIGINT NOT NULL,
    log_seq BIGINT NOT NULL
);

-- Waiting and running jobs by priority, then submission (restart
-- recovery); lists filtered by state.
CREATE INDEX IF NOT EXISTS jobs_state_priority_id ON jobs (state, priority, id);
CREATE INDEX IF NOT EXISTS jobs_state_id ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_service_id ON jobs (service, id);
CREATE INDEX IF NOT EXISTS jobs_tenant_id ON jobs (tenant, id);
-- Retention.
CREATE INDEX IF NOT EXISTS jobs_finished_ms ON jobs (finished_ms);

-- Every state a job entered, oldest first.
CREATE TABLE IF NOT EXISTS job_transitions (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    node TEXT,
    note TEXT,
    PRIMARY KEY (job_id, seq)
);

-- A job's log lines, seq from 1.
CREATE TABLE IF NOT EXISTS job_logs (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    -- LogStream::as_str.
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- A job's stored result, apart from its row (up to MiBs).
CREATE TABLE IF NOT EXISTS job_results (
    job_id TEXT PRIMARY KEY,
    data BYTEA NOT NULL,
    content_type TEXT
);

-- Templates created over the API (gateway.toml's are not stored).
CREATE TABLE IF NOT EXISTS job_templates (
    name TEXT PRIMARY KEY,
    -- TemplateConfig as JSON.
    config TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
