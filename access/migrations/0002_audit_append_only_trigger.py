"""On PostgreSQL the database itself refuses to change or remove audit rows.

(The ORM refuses too — ``AuditEventQuerySet`` — but a trigger also stops raw
SQL from the application's database role.)  SQLite relies on the ORM guard:
its test-database flush deletes rows, which a trigger would block.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION cairn_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF current_setting('cairn.audit_retention', true) = 'on' AND TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS access_auditevent_append_only ON access_auditevent;
CREATE TRIGGER access_auditevent_append_only
    BEFORE UPDATE OR DELETE ON access_auditevent
    FOR EACH ROW EXECUTE FUNCTION cairn_audit_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS access_auditevent_append_only ON access_auditevent;
DROP FUNCTION IF EXISTS cairn_audit_append_only();
"""


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("access", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
