-- The governance revision (issue 26): one counter moved, in the same
-- transaction, by every change to a table a read decision may read —
-- accounts, organisations and groups, the catalogue, purposes,
-- agreements, the charter, stream credentials, and every other table not
-- named below — so that a decision kept while the counter stands still
-- (the notification worker keeps its allow decisions across passes) can
-- never outlive a change that would alter it. Moved by triggers, so no
-- write path can forget it. A table left out is one written at every
-- read, write or notification that no read decision reads: the streams'
-- entities, history, subscriptions and outbox (`ngsi_*`,
-- `stream_revisions`), the transparency log and its witnesses
-- (`ledger_*`, `checkpoint_cosignatures`, `witnessed_checkpoints`,
-- `witness_evidence`), what personal reads included (`personal_reads`,
-- `subject_index`: the subjects revision covers those), sign-ins
-- (`sessions`, `api_tokens`, `oidc_logins`: a decision is made for an
-- account, never for a session or a token) and the counters themselves.
-- The store checks on opening that every table either moves the counter
-- or is named in `UNGOVERNED_TABLES`, and does not open otherwise.
INSERT INTO counters (name, value) VALUES ('governance_revision', 0);
-- On PostgreSQL the counter is moved at commit (constraint triggers,
-- deferred), once per transaction: its row's lock is then the last a
-- transaction takes, so two transactions changing governed tables in
-- different orders never wait on each other through it (moved at each
-- statement, they deadlocked). A constraint trigger cannot watch
-- TRUNCATE: the store truncates no table.
CREATE FUNCTION citytrust_governance_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('citytrust.governance_moved', true) IS DISTINCT FROM 'yes' THEN
        UPDATE counters SET value = value + 1 WHERE name = 'governance_revision';
        PERFORM set_config('citytrust.governance_moved', 'yes', true);
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON access_requests DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON agreement_datasets DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON agreements DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON authorities DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON birth_dates DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON breaches DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON charters DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON consents DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON consultation_responses DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON consultations DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON data_request_supports DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON data_requests DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON dataset_feedback DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON dataset_quality_rules DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON dataset_roles DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON dataset_versions DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON datasets DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON dsp_consumer_negotiations DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON dsp_negotiations DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON dsp_transfers DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON erased_subjects DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON external_identities DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON federated_entries DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON federated_staging DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON group_members DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON inbox DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON link_codes DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON log_witnesses DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON memberships DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON org_groups DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON organizations DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON outcome_reports DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON privacy_budgets DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON project_documents DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON projects DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON purposes DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON remote_catalogues DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON stream_credentials DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON subject_commitments DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON subject_links DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON subject_requests DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON trustee_terms DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON users DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
CREATE CONSTRAINT TRIGGER governance_moved AFTER INSERT OR UPDATE OR DELETE ON version_claims DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION citytrust_governance_moved();
