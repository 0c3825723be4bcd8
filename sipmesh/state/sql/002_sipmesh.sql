-- sipmesh schema 2: sipmesh's own tables (no Kamailio equivalent).

-- One row per call, written by accounting from the dialog events (issue 9).
-- duration is answer -> end in seconds (0 for unanswered calls); status is the final
-- SIP status of the INVITE; end_reason says how the call ended: bye, cancel, failed,
-- timeout (closed by the dialog timeout, no BYE seen) ...
CREATE TABLE IF NOT EXISTS cdrs (
    id {SERIAL},
    call_id VARCHAR(255) NOT NULL,
    from_tag VARCHAR(128) DEFAULT '' NOT NULL,
    to_tag VARCHAR(128) DEFAULT '' NOT NULL,
    caller VARCHAR(255) DEFAULT '' NOT NULL,
    callee VARCHAR(255) DEFAULT '' NOT NULL,
    src_ip VARCHAR(64) DEFAULT '' NOT NULL,
    dst_uri VARCHAR(255) DEFAULT '' NOT NULL,
    start_time {DATETIME} NOT NULL,
    answer_time {DATETIME} DEFAULT NULL,
    end_time {DATETIME} DEFAULT NULL,
    duration REAL DEFAULT 0 NOT NULL,
    status INTEGER DEFAULT 0 NOT NULL,
    end_reason VARCHAR(32) DEFAULT '' NOT NULL,
    CONSTRAINT cdrs_call_id_idx UNIQUE (call_id)
);
CREATE INDEX IF NOT EXISTS cdrs_start_time_idx ON cdrs (start_time);
CREATE INDEX IF NOT EXISTS cdrs_caller_idx ON cdrs (caller);
CREATE INDEX IF NOT EXISTS cdrs_callee_idx ON cdrs (callee);

-- Idempotency of durable event consumers: a consumer inserts (consumer, event_id) in
-- the same transaction as the records an event produces, with ON CONFLICT DO
-- NOTHING, and skips the event when the row already existed (a redelivery).
CREATE TABLE IF NOT EXISTS events_processed (
    consumer VARCHAR(64) NOT NULL,
    event_id VARCHAR(128) NOT NULL,
    processed_at {DATETIME} NOT NULL,
    CONSTRAINT events_processed_pkey PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS events_processed_at_idx ON events_processed (processed_at);
