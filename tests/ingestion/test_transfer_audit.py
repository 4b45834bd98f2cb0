"""An export may carry the audit log: the import verifies it on its own, keeps it apart, never merges it."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from access.models import AuditEvent, User
from access.services import SYSTEM, Actor, audit_record
from ingestion.transfer import ArchiveRefused, archive_export, archive_import
from kb.models import Collection
from kb.services import collection_create

pytestmark = pytest.mark.django_db(transaction=True)


def _rewrite(source: Path, destination: Path, name: str, change) -> None:
    """Copy the archive with ``name`` changed by ``change`` and the manifest's hash updated to match:
    what someone who edits an exported log and re-seals the archive would produce."""
    with tarfile.open(source) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    files[name] = change(files[name])
    manifest = json.loads(files["manifest.json"])
    manifest["files"][name] = hashlib.sha256(files[name]).hexdigest()
    files["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(destination, "w") as tar:
        for member, content in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def test_the_audit_log_travels_verified_and_stays_apart(tmp_path, isolated_storage, settings):
    olga, pavel = User.objects.create(username="olga"), User.objects.create(username="pavel")
    collection_create(actor=Actor(user=olga), owner=olga, name="Contracts")
    for i in range(5):
        audit_record(actor=Actor(user=olga), action="kb.search", target_type="collection", target_id=str(i))
    exported_events = AuditEvent.objects.count()
    archive = tmp_path / "with-audit.tar"
    counts = archive_export(archive, audit=True)
    assert counts["audit_events"] == exported_events

    last_id = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    result = archive_import(archive, owner=pavel, actor=SYSTEM)
    kept = result.audit_log
    assert kept is not None and kept["events"] == exported_events and kept["keyed_unverified"] == 0
    stored = Path(settings.DATA_DIR) / kept["stored_as"]
    assert stored.is_file() and hashlib.sha256(stored.read_bytes()).hexdigest() == kept["sha256"]
    # Not merged: the receiving chain grew by the import's own events only, one of them the import event.
    new = list(AuditEvent.objects.filter(id__gt=last_id).values_list("action", flat=True))
    assert new.count("archive.import") == 1 and "kb.search" not in new
    event = AuditEvent.objects.get(action="archive.import")
    assert event.detail["audit_log"]["head_hash"] == kept["head_hash"]
    call_command("cairn_audit_verify")  # the receiving chain still verifies
    out = io.StringIO()
    call_command("cairn_audit_verify", "--archive", str(stored), stdout=out)  # and so does the kept log
    assert f"{exported_events} events" in out.getvalue()

    # The same archive again: the same file, no second copy.
    assert archive_import(archive, owner=pavel, actor=SYSTEM).audit_log["stored_as"] == kept["stored_as"]
    assert [p.name for p in stored.parent.iterdir()].count(stored.name) == 1
    assert not list(stored.parent.glob("*.partial"))


def test_an_edited_audit_log_is_refused_even_with_a_resealed_manifest(tmp_path, isolated_storage, settings):
    olga, pavel = User.objects.create(username="olga"), User.objects.create(username="pavel")
    collection_create(actor=Actor(user=olga), owner=olga, name="Contracts")
    for chars in (12, 30, 31):
        audit_record(actor=Actor(user=olga), action="kb.search", target_type="collection", target_id="1",
                     detail={"query_chars": chars})
    archive = tmp_path / "with-audit.tar"
    archive_export(archive, audit=True)
    kept_dir = Path(settings.DATA_DIR) / "audit-imports"
    kept_before = set(kept_dir.iterdir()) if kept_dir.exists() else set()

    edited = tmp_path / "edited.tar"
    _rewrite(archive, edited, "audit.jsonl", lambda b: b.replace(b'"query_chars": 12', b'"query_chars": 13'))
    with pytest.raises(ArchiveRefused, match=r"audit\.jsonl: its chain does not verify: event \d+"):
        archive_import(edited, owner=pavel, actor=SYSTEM)
    dropped = tmp_path / "dropped.tar"
    _rewrite(archive, dropped, "audit.jsonl", lambda b: b"".join(b.splitlines(keepends=True)[:2]
                                                                 + b.splitlines(keepends=True)[3:]))
    with pytest.raises(ArchiveRefused, match="a row was removed or inserted"):
        archive_import(dropped, owner=pavel, actor=SYSTEM)
    garbage = tmp_path / "garbage.tar"
    _rewrite(archive, garbage, "audit.jsonl", lambda b: b + b"not json\n")
    with pytest.raises(ArchiveRefused, match=r"audit\.jsonl: line \d+ is not an exported audit event"):
        archive_import(garbage, owner=pavel, actor=SYSTEM)
    # Nothing was loaded from a refused archive, and nothing kept.
    assert not AuditEvent.objects.filter(action="archive.import").exists()
    assert (set(kept_dir.iterdir()) if kept_dir.exists() else set()) == kept_before
    assert not Collection.objects.filter(owner=pavel).exists()
    with pytest.raises(CommandError, match="line"):
        (tmp_path / "bad.jsonl").write_text("{}\n")
        call_command("cairn_audit_verify", "--archive", str(tmp_path / "bad.jsonl"))
