-- Retention purge for a service role that may only INSERT and SELECT on the audit tables
-- (docs/audit.md, "PostgreSQL least privilege"). The function runs with its owner's rights
-- (the role that ran the migrations) and does one thing: move the anchor forward to the event
-- after `p_through` and delete the events up to it, only if the most recent audit.checkpoint
-- event records exactly that anchor (the checkpoint sesame signs just before a purge).
CREATE FUNCTION audit_purge(p_through BIGINT, p_now BIGINT) RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_hash TEXT;
    v_checkpoint JSONB;
    v_removed BIGINT;
BEGIN
    SELECT hash INTO v_hash FROM audit_events WHERE id = p_through;
    IF v_hash IS NULL THEN
        RAISE EXCEPTION 'audit_purge: no event %', p_through;
    END IF;
    SELECT details::jsonb INTO v_checkpoint FROM audit_events
        WHERE action = 'audit.checkpoint' ORDER BY id DESC LIMIT 1;
    IF v_checkpoint IS NULL
       OR (v_checkpoint->>'first_id')::BIGINT IS DISTINCT FROM p_through + 1
       OR v_checkpoint->>'anchor_hash' IS DISTINCT FROM v_hash THEN
        RAISE EXCEPTION 'audit_purge: the last audit.checkpoint does not vouch for an anchor at event %', p_through + 1;
    END IF;
    UPDATE audit_retention SET purge_before_id = p_through + 1, anchor_hash = v_hash, updated_at = p_now
        WHERE id = 1;
    DELETE FROM audit_events WHERE id <= p_through;
    GET DIAGNOSTICS v_removed = ROW_COUNT;
    RETURN v_removed;
END;
$$;
-- A SECURITY DEFINER function must not follow the caller's search_path: pin it to the schema
-- the migrations run in.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION audit_purge(BIGINT, BIGINT) SET search_path = %I, pg_temp',
                   current_schema());
END;
$$;
COMMENT ON FUNCTION audit_purge(BIGINT, BIGINT) IS 'Retention purge below the anchor vouched for by the latest audit.checkpoint; the only deletion the service role can cause.';
REVOKE ALL ON FUNCTION audit_purge(BIGINT, BIGINT) FROM PUBLIC;
