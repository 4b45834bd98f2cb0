"""Audit appends without a lock: at most one successor per event, and only onto the head.

Before this, appends took a global lock.  Now (``access.services.audit_record``)
a writer hashes onto the head it read and inserts; two rules in the database
make that a single chain:

* a unique constraint on ``prev_hash``: two writers that read the same head
  cannot both append (the loser reads the new head and tries again);
* a trigger refusing an event whose ``prev_hash`` is not the newest event's
  hash: a writer whose head was removed meanwhile by a retention purge
  (whose unique partner vanished with it) cannot link to it.

A chain written by Cairn never has two events with the same ``prev_hash``;
one that does was forked by hand, and the migration stops and says so rather
than guess which branch to keep.
"""

from django.db import migrations, models

PG_CREATE = """
CREATE OR REPLACE FUNCTION cairn_audit_onto_head() RETURNS trigger AS $$
DECLARE
    head text;
BEGIN
    SELECT hash INTO head FROM access_auditevent ORDER BY id DESC LIMIT 1;
    IF head IS NOT NULL AND NEW.prev_hash <> head THEN
        RAISE EXCEPTION 'audit event does not link to the newest event' USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS access_auditevent_onto_head ON access_auditevent;
CREATE TRIGGER access_auditevent_onto_head BEFORE INSERT ON access_auditevent
    FOR EACH ROW EXECUTE FUNCTION cairn_audit_onto_head();
"""
PG_DROP = """
DROP TRIGGER IF EXISTS access_auditevent_onto_head ON access_auditevent;
DROP FUNCTION IF EXISTS cairn_audit_onto_head();
"""
SQLITE_CREATE = """
CREATE TRIGGER IF NOT EXISTS access_auditevent_onto_head BEFORE INSERT ON access_auditevent
WHEN EXISTS (SELECT 1 FROM access_auditevent)
     AND NEW.prev_hash <> (SELECT hash FROM access_auditevent ORDER BY id DESC LIMIT 1)
BEGIN
    SELECT RAISE(ABORT, 'audit event does not link to the newest event');
END;
"""
SQLITE_DROP = "DROP TRIGGER IF EXISTS access_auditevent_onto_head;"


def no_forks(apps, schema_editor):  # type: ignore[no-untyped-def]
    AuditEvent = apps.get_model("access", "AuditEvent")
    forks = list(AuditEvent.objects.values("prev_hash").annotate(n=models.Count("id")).filter(n__gt=1)
                 .values_list("prev_hash", flat=True)[:5])
    if forks:
        raise RuntimeError(
            "The audit log has events that share a predecessor (prev_hash "
            + ", ".join(h[:12] for h in forks)
            + "): the chain was forked outside Cairn. Run `manage.py cairn_audit_verify` and keep a copy of the "
            "table before resolving it; this migration refuses to continue until then."
        )


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_CREATE, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_CREATE, params=None)


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_DROP, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("access", "0005_audit_scheme")]
    operations = [
        migrations.RunPython(no_forks, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.UniqueConstraint(fields=["prev_hash"], name="audit_one_successor"),
        ),
        migrations.RunPython(forwards, backwards),
    ]
