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
CREATE TRIGGER governance_access_requests_i AFTER INSERT ON access_requests BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_access_requests_u AFTER UPDATE ON access_requests BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_access_requests_d AFTER DELETE ON access_requests BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_agreement_datasets_i AFTER INSERT ON agreement_datasets BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_agreement_datasets_u AFTER UPDATE ON agreement_datasets BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_agreement_datasets_d AFTER DELETE ON agreement_datasets BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_agreements_i AFTER INSERT ON agreements BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_agreements_u AFTER UPDATE ON agreements BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_agreements_d AFTER DELETE ON agreements BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_authorities_i AFTER INSERT ON authorities BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_authorities_u AFTER UPDATE ON authorities BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_authorities_d AFTER DELETE ON authorities BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_birth_dates_i AFTER INSERT ON birth_dates BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_birth_dates_u AFTER UPDATE ON birth_dates BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_birth_dates_d AFTER DELETE ON birth_dates BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_breaches_i AFTER INSERT ON breaches BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_breaches_u AFTER UPDATE ON breaches BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_breaches_d AFTER DELETE ON breaches BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_charters_i AFTER INSERT ON charters BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_charters_u AFTER UPDATE ON charters BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_charters_d AFTER DELETE ON charters BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_consents_i AFTER INSERT ON consents BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_consents_u AFTER UPDATE ON consents BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_consents_d AFTER DELETE ON consents BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_consultation_responses_i AFTER INSERT ON consultation_responses BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_consultation_responses_u AFTER UPDATE ON consultation_responses BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_consultation_responses_d AFTER DELETE ON consultation_responses BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_consultations_i AFTER INSERT ON consultations BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_consultations_u AFTER UPDATE ON consultations BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_consultations_d AFTER DELETE ON consultations BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_data_request_supports_i AFTER INSERT ON data_request_supports BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_data_request_supports_u AFTER UPDATE ON data_request_supports BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_data_request_supports_d AFTER DELETE ON data_request_supports BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_data_requests_i AFTER INSERT ON data_requests BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_data_requests_u AFTER UPDATE ON data_requests BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_data_requests_d AFTER DELETE ON data_requests BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dataset_feedback_i AFTER INSERT ON dataset_feedback BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dataset_feedback_u AFTER UPDATE ON dataset_feedback BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dataset_feedback_d AFTER DELETE ON dataset_feedback BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dataset_quality_rules_i AFTER INSERT ON dataset_quality_rules BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dataset_quality_rules_u AFTER UPDATE ON dataset_quality_rules BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dataset_quality_rules_d AFTER DELETE ON dataset_quality_rules BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dataset_roles_i AFTER INSERT ON dataset_roles BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dataset_roles_u AFTER UPDATE ON dataset_roles BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dataset_roles_d AFTER DELETE ON dataset_roles BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dataset_versions_i AFTER INSERT ON dataset_versions BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dataset_versions_u AFTER UPDATE ON dataset_versions BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dataset_versions_d AFTER DELETE ON dataset_versions BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_datasets_i AFTER INSERT ON datasets BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_datasets_u AFTER UPDATE ON datasets BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_datasets_d AFTER DELETE ON datasets BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dsp_consumer_negotiations_i AFTER INSERT ON dsp_consumer_negotiations BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dsp_consumer_negotiations_u AFTER UPDATE ON dsp_consumer_negotiations BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dsp_consumer_negotiations_d AFTER DELETE ON dsp_consumer_negotiations BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dsp_negotiations_i AFTER INSERT ON dsp_negotiations BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dsp_negotiations_u AFTER UPDATE ON dsp_negotiations BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dsp_negotiations_d AFTER DELETE ON dsp_negotiations BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dsp_transfers_i AFTER INSERT ON dsp_transfers BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dsp_transfers_u AFTER UPDATE ON dsp_transfers BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_dsp_transfers_d AFTER DELETE ON dsp_transfers BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_erased_subjects_i AFTER INSERT ON erased_subjects BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_erased_subjects_u AFTER UPDATE ON erased_subjects BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_erased_subjects_d AFTER DELETE ON erased_subjects BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_external_identities_i AFTER INSERT ON external_identities BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_external_identities_u AFTER UPDATE ON external_identities BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_external_identities_d AFTER DELETE ON external_identities BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_federated_entries_i AFTER INSERT ON federated_entries BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_federated_entries_u AFTER UPDATE ON federated_entries BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_federated_entries_d AFTER DELETE ON federated_entries BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_federated_staging_i AFTER INSERT ON federated_staging BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_federated_staging_u AFTER UPDATE ON federated_staging BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_federated_staging_d AFTER DELETE ON federated_staging BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_group_members_i AFTER INSERT ON group_members BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_group_members_u AFTER UPDATE ON group_members BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_group_members_d AFTER DELETE ON group_members BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_inbox_i AFTER INSERT ON inbox BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_inbox_u AFTER UPDATE ON inbox BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_inbox_d AFTER DELETE ON inbox BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_link_codes_i AFTER INSERT ON link_codes BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_link_codes_u AFTER UPDATE ON link_codes BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_link_codes_d AFTER DELETE ON link_codes BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_log_witnesses_i AFTER INSERT ON log_witnesses BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_log_witnesses_u AFTER UPDATE ON log_witnesses BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_log_witnesses_d AFTER DELETE ON log_witnesses BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_memberships_i AFTER INSERT ON memberships BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_memberships_u AFTER UPDATE ON memberships BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_memberships_d AFTER DELETE ON memberships BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_org_groups_i AFTER INSERT ON org_groups BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_org_groups_u AFTER UPDATE ON org_groups BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_org_groups_d AFTER DELETE ON org_groups BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_organizations_i AFTER INSERT ON organizations BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_organizations_u AFTER UPDATE ON organizations BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_organizations_d AFTER DELETE ON organizations BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_outcome_reports_i AFTER INSERT ON outcome_reports BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_outcome_reports_u AFTER UPDATE ON outcome_reports BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_outcome_reports_d AFTER DELETE ON outcome_reports BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_privacy_budgets_i AFTER INSERT ON privacy_budgets BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_privacy_budgets_u AFTER UPDATE ON privacy_budgets BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_privacy_budgets_d AFTER DELETE ON privacy_budgets BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_project_documents_i AFTER INSERT ON project_documents BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_project_documents_u AFTER UPDATE ON project_documents BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_project_documents_d AFTER DELETE ON project_documents BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_projects_i AFTER INSERT ON projects BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_projects_u AFTER UPDATE ON projects BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_projects_d AFTER DELETE ON projects BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_purposes_i AFTER INSERT ON purposes BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_purposes_u AFTER UPDATE ON purposes BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_purposes_d AFTER DELETE ON purposes BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_remote_catalogues_i AFTER INSERT ON remote_catalogues BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_remote_catalogues_u AFTER UPDATE ON remote_catalogues BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_remote_catalogues_d AFTER DELETE ON remote_catalogues BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_stream_credentials_i AFTER INSERT ON stream_credentials BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_stream_credentials_u AFTER UPDATE ON stream_credentials BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_stream_credentials_d AFTER DELETE ON stream_credentials BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_subject_commitments_i AFTER INSERT ON subject_commitments BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_subject_commitments_u AFTER UPDATE ON subject_commitments BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_subject_commitments_d AFTER DELETE ON subject_commitments BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_subject_links_i AFTER INSERT ON subject_links BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_subject_links_u AFTER UPDATE ON subject_links BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_subject_links_d AFTER DELETE ON subject_links BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_subject_requests_i AFTER INSERT ON subject_requests BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_subject_requests_u AFTER UPDATE ON subject_requests BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_subject_requests_d AFTER DELETE ON subject_requests BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_trustee_terms_i AFTER INSERT ON trustee_terms BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_trustee_terms_u AFTER UPDATE ON trustee_terms BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_trustee_terms_d AFTER DELETE ON trustee_terms BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_users_i AFTER INSERT ON users BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_users_u AFTER UPDATE ON users BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_users_d AFTER DELETE ON users BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_version_claims_i AFTER INSERT ON version_claims BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_version_claims_u AFTER UPDATE ON version_claims BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
CREATE TRIGGER governance_version_claims_d AFTER DELETE ON version_claims BEGIN UPDATE counters SET value = value + 1 WHERE name = 'governance_revision'; END;
