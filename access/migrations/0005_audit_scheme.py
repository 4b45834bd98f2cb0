"""The hash scheme of each audit row, and no TRUNCATE of the audit table on PostgreSQL.

Rows written before this migration were hashed over ``json.dumps`` of their
fields (``sha256``); new rows name their scheme (``access.audit``).  The
append-only trigger (0002/0003) fires per row, which TRUNCATE skips: a
statement trigger refuses it.
"""

from django.db import migrations, models

CREATE = """
CREATE OR REPLACE FUNCTION cairn_audit_no_truncate() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (TRUNCATE refused)';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS access_auditevent_no_truncate ON access_auditevent;
CREATE TRIGGER access_auditevent_no_truncate
    BEFORE TRUNCATE ON access_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION cairn_audit_no_truncate();
"""

DROP = """
DROP TRIGGER IF EXISTS access_auditevent_no_truncate ON access_auditevent;
DROP FUNCTION IF EXISTS cairn_audit_no_truncate();
"""


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("access", "0004_policy")]
    operations = [
        migrations.AddField(model_name="auditevent", name="scheme",
                            field=models.CharField(default="sha256", max_length=24)),
        migrations.RunPython(forwards, backwards),
    ]
