-- The request id of the request that submitted a job (its `x-request-id`,
-- or one the gateway made up); its attempts' calls carry it. NULL for jobs
-- stored before request ids.
ALTER TABLE jobs ADD COLUMN request_id TEXT;
