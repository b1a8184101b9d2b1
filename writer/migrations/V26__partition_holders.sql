-- The writer that last moved the check states of each Kafka partition (a random token
-- per writer process). A writer keeps the states its batches committed in memory and
-- trusts them only while it is its partitions' last holder (alerts/state_cache.rs).
CREATE TABLE partition_holders (
    topic     text    NOT NULL,
    partition integer NOT NULL,
    holder    text    NOT NULL,
    PRIMARY KEY (topic, partition)
);
