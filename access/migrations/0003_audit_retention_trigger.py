"""Narrow the PostgreSQL append-only trigger to the retention purge.

0002 let any DELETE through once ``cairn.audit_retention`` was 'on'.  Now a
DELETE passes only for rows whose id is at most the transaction-local
setting ``cairn.audit_purge_through``, which only
``access.services.audit_retention_purge`` sets (with ``set_config(…, true)``,
so it ends with its transaction).  UPDATE is always refused.

The trigger guards against the application and stray SQL; a database
superuser can still drop it, which is what the hash chain is for.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION cairn_audit_append_only() RETURNS trigger AS $$
DECLARE
    through text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        through := current_setting('cairn.audit_purge_through', true);
        IF through IS NOT NULL AND through ~ '^[0-9]+$' AND OLD.id <= through::bigint THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
"""

PREVIOUS = """
CREATE OR REPLACE FUNCTION cairn_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF current_setting('cairn.audit_retention', true) = 'on' AND TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only';
END;
$$ LANGUAGE plpgsql;
"""


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)  # "%" is plpgsql here, not a placeholder


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PREVIOUS, params=None)


class Migration(migrations.Migration):
    dependencies = [("access", "0002_audit_append_only_trigger")]
    operations = [migrations.RunPython(forwards, backwards)]
