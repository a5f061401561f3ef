-- The first answer to each action sent with an Idempotency-Key, so a repeat
-- answers the same even after the order's workflow has finished (Temporal then
-- no longer takes updates). Keys are the caller's own, as for placements.
--
-- A row is claimed (status NULL) before the action reaches the workflow, so
-- the same key cannot be spent on two orders or actions at once; the answer is
-- filled in once it is final (200 or 409). Retryable answers (503, 500) are
-- never stored: the claim stays open and the retry sends the action again,
-- under the same update id, which Temporal deduplicates.
CREATE TABLE IF NOT EXISTS action_answers (
    caller_id       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    action          TEXT NOT NULL,        -- cancel, accept, reject, ready, offer.accept, ...
    status          BIGINT,               -- HTTP status of the first answer; NULL while open
    body            TEXT,                 -- its JSON body, as sent
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (caller_id, idempotency_key)
);
