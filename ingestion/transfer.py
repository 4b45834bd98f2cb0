"""Export and import of collections as one archive: backup, and moving a personal install into a team one.

The archive is a tar file:

* ``manifest.json`` — the format, when and from what it was made, and the
  SHA-256 of every other file in the archive;
* ``data.json`` — the collections (name, description, grants by user or
  group name, the collection's access policy), their live documents (title, attributes) with the current
  version of each (text, parse results, chunks with their vectors and the
  model that made them), and the golden questions;
* ``blobs/<sha256>`` — each stored original;
* ``audit.jsonl`` — optionally (``--audit``), the whole audit log as the
  admins' JSONL export writes it, every event with its hashes.

Index files are not in it: the importer rebuilds the index from the
database, re-embedding any chunk whose vectors another model made.

``archive_import`` first checks every file against the manifest (and every
blob against its own name) and refuses the whole archive, naming the file,
when one does not match, is missing or is not listed.  Then it loads, as the
given owner: a collection is matched by owner and name, a document by its
bytes (``version_add``'s duplicate rule), so importing the same archive
twice changes nothing the second time.  One ``archive.import`` audit event
in the receiving chain records it.

An exported audit log is never merged into the receiving chain (its events
were hashed onto another chain): the import verifies it on its own —
refusing the archive if it does not verify — and keeps it, read-only, as
``<data dir>/audit-imports/<archive sha256 prefix>-audit.jsonl``, which
``cairn_audit_verify --archive`` checks again at any time; the
``archive.import`` event records its event count, head hash and SHA-256.

Older versions of a document are not exported.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.utils import timezone

from access.audit_review import EXPORT_FIELDS, audit_jsonl_verify, jsonl_line
from access.models import AuditEvent, Policy, User
from access.selectors import policy_source
from access.services import Actor, audit_record
from ingestion.indexing import index_rebuild
from ingestion.models import IngestionJob
from kb import index
from kb.models import Chunk, Collection, Document, DocumentVersion, GoldenQuestion
from kb.selectors import collection_members
from kb.services import (
    chunk_ids_reserve,
    collection_create,
    collection_policy_set,
    collection_share,
    version_add,
)
from kb.storage import blob_path, blob_store

FORMAT = "cairn-export/1"
WHY = "exporting and importing whole collections is an operator's task, for no one user"


class ArchiveRefused(Exception):
    """The archive is damaged, tampered with, or not a Cairn export; the message names the file."""


@dataclass
class ImportResult:
    collections_created: int = 0
    documents_created: int = 0
    documents_present: int = 0
    grants_skipped: list[str] = field(default_factory=list)
    audit_log: dict[str, Any] | None = None  # the archive's audit log, verified and kept apart


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- export -------------------------------------------------------------------------------------


def _collection_data(collection: Collection) -> dict[str, Any]:
    documents = []
    live = Document.objects.unrestricted(WHY).filter(collection=collection, deleted_at__isnull=True,
                                                     current_version__isnull=False)
    for document in live.select_related("current_version", "created_by").order_by("id"):
        version = document.current_version
        assert version is not None
        chunks = Chunk.objects.unrestricted(WHY).filter(version=version).order_by("ordinal")
        documents.append({
            "key": document.pk, "title": document.title, "attributes": document.attributes,
            "created_at": document.created_at.isoformat(), "created_by": document.created_by.get_username(),
            "version": {
                "sha256": version.sha256, "size": version.size, "kind": version.kind,
                "original_name": version.original_name, "text": version.text,
                "parsed_title": version.parsed_title, "page_count": version.page_count,
                "chunks": [{
                    "ordinal": c.ordinal, "text": c.text, "page": c.page, "heading": c.heading,
                    "char_start": c.char_start, "char_end": c.char_end, "token_count": c.token_count,
                    "embedding": base64.b64encode(bytes(c.embedding)).decode() if c.embedding else None,
                    "embedding_model": c.embedding_model,
                } for c in chunks],
            },
        })
    golden = [{"question": q.question,
               "expected": sorted(q.expected_documents.unrestricted(WHY).values_list("pk", flat=True))}
              for q in GoldenQuestion.objects.filter(collection=collection).order_by("id")]
    members = [{"kind": m.kind, "name": m.name, "role": m.role.value}
               for m in collection_members(collection) if not m.implicit]
    return {"name": collection.name, "description": collection.description, "owner": collection.owner.get_username(),
            "members": members, "documents": documents, "golden": golden,
            "policy": policy_source(Policy.collection_scope(collection.pk))}


AUDIT_FILE = "audit.jsonl"
AUDIT_IMPORTS = "audit-imports"


def archive_export(destination: Path, *, collection_names: list[str] | None = None,
                   audit: bool = False) -> dict[str, int]:
    """Write the archive of every live collection (or the named ones) to ``destination``; counts back.

    ``audit``: the whole audit log too (``audit.jsonl``), read in the same snapshot as the collections.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":  # one snapshot for every query below
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        collections = Collection.objects.filter(deleted_at__isnull=True).select_related("owner").order_by("id")
        if collection_names:
            collections = collections.filter(name__in=collection_names)
            missing = set(collection_names) - set(collections.values_list("name", flat=True))
            if missing:
                raise ArchiveRefused(f"no collection named {sorted(missing)[0]!r}")
        data = {"collections": [_collection_data(c) for c in collections]}
        audit_lines = ([jsonl_line(row) for row in
                        AuditEvent.objects.order_by("id").values(*EXPORT_FIELDS).iterator(chunk_size=2000)]
                       if audit else [])
    shas = sorted({d["version"]["sha256"] for c in data["collections"] for d in c["documents"]})
    files: dict[str, bytes] = {"data.json": json.dumps(data, ensure_ascii=False).encode()}
    for sha in shas:
        files[f"blobs/{sha}"] = blob_path(sha).read_bytes()
    if audit:
        files[AUDIT_FILE] = "".join(audit_lines).encode()
    manifest = {
        "format": FORMAT, "created_at": timezone.now().isoformat(), "embedding_model": index.embedding_model_id(),
        "files": {name: _sha256(content) for name, content in files.items()},
    }
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    with tarfile.open(partial, "w") as tar:
        for name, content in [("manifest.json", json.dumps(manifest, indent=1).encode()), *files.items()]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(content), int(dt.datetime.now().timestamp()), 0o600
            tar.addfile(info, io.BytesIO(content))
    partial.replace(destination)
    return {"collections": len(data["collections"]),
            "documents": sum(len(c["documents"]) for c in data["collections"]), "blobs": len(shas),
            "audit_events": len(audit_lines)}


# --- import -------------------------------------------------------------------------------------


def archive_read(source: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, bytes], bytes | None]:
    """``(manifest, data, blobs by sha256, audit.jsonl or None)`` after checking every file;
    ``ArchiveRefused`` names a bad one."""
    try:
        with tarfile.open(source, "r") as tar:
            files: dict[str, bytes] = {}
            for member in tar.getmembers():
                if not member.isfile():
                    raise ArchiveRefused(f"{member.name}: not a plain file")
                handle = tar.extractfile(member)
                assert handle is not None
                files[member.name] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveRefused(f"{source}: not a readable archive ({exc})") from None
    try:
        manifest = json.loads(files.pop("manifest.json"))
        listed: dict[str, str] = dict(manifest["files"])
        if manifest.get("format") != FORMAT:
            raise ArchiveRefused(f"manifest.json: format {manifest.get('format')!r}, expected {FORMAT!r}")
    except KeyError:
        raise ArchiveRefused("manifest.json: missing or incomplete") from None
    except (ValueError, TypeError):
        raise ArchiveRefused("manifest.json: damaged (not valid JSON)") from None
    for name in sorted(set(files) | set(listed)):
        if name not in listed:
            raise ArchiveRefused(f"{name}: in the archive but not in its manifest")
        if name not in files:
            raise ArchiveRefused(f"{name}: listed in the manifest but missing from the archive")
        if _sha256(files[name]) != listed[name]:
            raise ArchiveRefused(f"{name}: its SHA-256 does not match the manifest (damaged or changed)")
        if name.startswith("blobs/") and _sha256(files[name]) != name[len("blobs/"):]:
            raise ArchiveRefused(f"{name}: its content does not match its name")
    data = json.loads(files.pop("data.json"))
    audit = files.pop(AUDIT_FILE, None)
    unexpected = sorted(name for name in files if not name.startswith("blobs/"))
    if unexpected:
        raise ArchiveRefused(f"{unexpected[0]}: not a file a Cairn export contains")
    return manifest, data, {name[len("blobs/"):]: content for name, content in files.items()}, audit


def archive_import(source: Path, *, owner: User, actor: Actor, audit_key: bytes | None = None) -> ImportResult:
    """Load a verified archive as ``owner``'s collections (idempotent); the index is rebuilt after.

    ``audit_key``: the *source* install's audit key, to prove its keyed events (without it they are
    checked for their links only, and the import event says how many).
    """
    manifest, data, blobs, audit = archive_read(source)
    kept = _audit_keep(audit, audit_key) if audit is not None else None  # refuses before anything is loaded
    result = ImportResult(audit_log=kept)
    as_owner = Actor(user=owner, request_id=actor.request_id)
    model = index.embedding_model_id()
    for entry in data["collections"]:
        with transaction.atomic():
            collection = Collection.objects.filter(owner=owner, name=entry["name"], deleted_at__isnull=True).first()
            if collection is None:
                collection = collection_create(actor=as_owner, owner=owner, name=entry["name"],
                                               description=entry["description"])
                result.collections_created += 1
            keys: dict[int, Document] = {}
            for doc in entry["documents"]:
                keys[doc["key"]] = _document_import(collection, doc, blobs, as_owner, model, result)
            _members_import(collection, entry["members"], as_owner, result)
            _policy_import(collection, entry.get("policy") or "", as_owner)
            _golden_import(collection, entry["golden"], keys, owner)
    if result.documents_created:
        index_rebuild()
    audit_record(actor=actor, action="archive.import", target_type="archive", target_id=str(source.name)[:100],
                 detail={"created_at": manifest["created_at"], "owner": owner.get_username(),
                         "collections_created": result.collections_created,
                         "documents_created": result.documents_created,
                         "documents_present": result.documents_present,
                         **({"audit_log": kept} if kept else {})})
    return result


def _audit_keep(audit: bytes, key: bytes | None) -> dict[str, Any]:
    """Verify an archive's audit log on its own and keep it beside (never in) this install's chain."""
    try:
        lines = audit.decode("utf-8", errors="strict").splitlines()
        report = audit_jsonl_verify(lines, key=key)
    except ValueError as exc:  # UnicodeDecodeError is one
        raise ArchiveRefused(f"{AUDIT_FILE}: {exc}") from None
    if not report.ok:
        raise ArchiveRefused(f"{AUDIT_FILE}: its chain does not verify: event {report.first_broken_id}: "
                             f"{report.reason} ({len(report.broken)} findings)")
    sha = _sha256(audit)
    directory = Path(settings.DATA_DIR) / AUDIT_IMPORTS
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{sha[:16]}-audit.jsonl"
    if not target.exists():  # the same log imported again: already kept
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(audit)
        partial.chmod(0o440)
        partial.replace(target)
    head = json.loads(lines[-1])["hash"] if lines else ""
    return {"events": report.checked, "head_hash": head, "sha256": sha,
            "stored_as": f"{AUDIT_IMPORTS}/{target.name}", "keyed_unverified": report.unverified}


def _document_import(collection: Collection, doc: dict[str, Any], blobs: dict[str, bytes], actor: Actor,
                     model: str, result: ImportResult) -> Document:
    version_in = doc["version"]
    present = (DocumentVersion.objects.restrict(actor.user).filter(sha256=version_in["sha256"],
                                                                   document__collection=collection)
               .select_related("document").first())
    if present is not None:  # imported before (or uploaded here): nothing to change, nothing to audit
        result.documents_present += 1
        return present.document
    content = blobs[version_in["sha256"]]
    stored = blob_store([content], limit=len(content))
    added = version_add(actor=actor, collection=collection, title=doc["title"], blob=stored, kind=version_in["kind"])
    if added.duplicate:
        result.documents_present += 1
        return added.document
    document, version = added.document, added.version
    chunks = version_in["chunks"]
    start = chunk_ids_reserve(len(chunks)) if chunks else None
    Chunk.objects.bulk_create([
        Chunk(id=start + i, version=version, document=document, ordinal=c["ordinal"], text=c["text"],
              page=c["page"], heading=c["heading"], char_start=c["char_start"], char_end=c["char_end"],
              token_count=c["token_count"],
              embedding=base64.b64decode(c["embedding"]) if c["embedding"] else None,
              embedding_model=c["embedding_model"])
        for i, c in enumerate(chunks)
    ] if start is not None else [], batch_size=500)
    now = timezone.now()
    DocumentVersion.objects.unrestricted(WHY).filter(pk=version.pk).update(
        text=version_in["text"], parsed_title=version_in["parsed_title"], page_count=version_in["page_count"],
        original_name=version_in["original_name"], chunk_id_start=start, chunk_count=len(chunks), indexed_at=now)
    version.refresh_from_db()
    document.make_current(version)
    document.attributes = doc["attributes"]
    document.save(update_fields=[*Document.CURRENT_FIELDS, "attributes"])
    IngestionJob.objects.create(version=version, status=IngestionJob.Status.INDEXED, progress=1.0,
                                embedding_model=model if all(c["embedding_model"] == model for c in chunks) else "",
                                detail="Imported", finished_at=now, updated_at=now)
    result.documents_created += 1
    return document


def _members_import(collection: Collection, members: list[dict[str, str]], actor: Actor,
                    result: ImportResult) -> None:
    for member in members:
        principal: User | Group | None
        if member["kind"] == "user":
            principal = User.objects.filter(username=member["name"]).first()
        else:
            principal = Group.objects.filter(name=member["name"]).first()
        if principal is None or principal == collection.owner:
            result.grants_skipped.append(f"{member['kind']} {member['name']} ({member['role']})")
            continue
        collection_share(actor=actor, collection=collection, principal=principal, role=member["role"])


def _policy_import(collection: Collection, source: str, actor: Actor) -> None:
    """The collection's access policy as exported (set only when it differs: a second import changes nothing)."""
    if source.strip() and policy_source(Policy.collection_scope(collection.pk)) != source:
        collection_policy_set(actor=actor, collection=collection, source=source)


def _golden_import(collection: Collection, golden: list[dict[str, Any]], keys: dict[int, Document],
                   owner: User) -> None:
    present = set(GoldenQuestion.objects.filter(collection=collection).values_list("question", flat=True))
    for entry in golden:
        if entry["question"] in present:
            continue
        question = GoldenQuestion.objects.create(collection=collection, question=entry["question"], created_by=owner)
        question.expected_documents.add(*[keys[k] for k in entry["expected"] if k in keys])  # a new question
