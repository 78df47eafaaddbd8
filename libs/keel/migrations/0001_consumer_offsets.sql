-- Consumer positions of services that write to Postgres: stored in the same transaction as the rows
-- they produced, so a replay after a crash resumes exactly where the durable state ends.
CREATE TABLE consumer_offsets (
    consumer_group text   NOT NULL,
    topic          text   NOT NULL,
    partition      int    NOT NULL,
    next_offset    bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
