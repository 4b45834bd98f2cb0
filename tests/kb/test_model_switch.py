"""Blue-green embedding model switch: the new index is built alongside, search works throughout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from ingestion.model_switch import model_switch
from ingestion.models import IngestionJob
from kb.index import active_model
from kb.models import Chunk
from kb.retrieval.embedding import BUNDLED_MODEL_ID
from tests.kb.conftest import upload
from tests.kb.tiny_embedder import build_tiny_embedder

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(build_tiny_embedder(tmp_path_factory.mktemp("tiny")))


def search(api, collection_id, q: str) -> list[dict]:
    response = api.get("/api/v1/search", {"q": q, "collection": collection_id})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_switching_the_embedding_model_keeps_search_working_and_ends_on_the_new_model(
    api, collection_id, settings, tiny_model, capsys
):
    from kb.index import index_reader

    upload(api, collection_id, "boiler.md", b"# Boiler\n\nThe boiler is descaled every spring by the caretaker.\n")
    upload(api, collection_id, "leave.md", b"# Leave\n\nParental leave lasts twenty weeks at full pay.\n")
    assert search(api, collection_id, "boiler descaling")[0]["title"].startswith("boiler")
    assert active_model().model_id == BUNDLED_MODEL_ID

    # Configuring another model changes nothing until the switch completes.
    settings.CAIRN_EMBEDDING_MODEL = tiny_model
    assert active_model().model_id == BUNDLED_MODEL_ID
    assert search(api, collection_id, "parental leave")[0]["title"].startswith("leave")

    seen_during: list[str] = []
    uploaded = []

    def progress(done: int, total: int) -> None:
        # Phase 1 (no lock): searches use the old index, and new documents are indexed into it.
        seen_during.append(index_reader().snapshot().model_id)
        assert search(api, collection_id, "boiler descaling")
        if not uploaded:
            uploaded.append(upload(api, collection_id, "fire.md", b"# Fire\n\nFire drills happen every March.\n"))

    def before_flip() -> None:
        seen_during.append(index_reader().snapshot().model_id)
        assert search(api, collection_id, "parental leave")[0]["title"].startswith("leave")

    result = model_switch(progress=progress, before_flip=before_flip)

    assert result.switched and result.previous == BUNDLED_MODEL_ID and result.active == active_model().model_id
    assert set(seen_during) == {BUNDLED_MODEL_ID}
    snapshot = index_reader().snapshot()
    assert snapshot.model_id == result.active and snapshot.dense.dim == 32
    assert snapshot.size == Chunk.objects.unrestricted("test").count() == 3  # the document added mid-switch was caught up
    assert {len(bytes(v)) for v in Chunk.objects.unrestricted("test").values_list("embedding", flat=True)} == {32 * 4}
    assert search(api, collection_id, "fire drills March")[0]["title"].startswith("fire")

    # After the swap, new documents are embedded with the new model.
    upload(api, collection_id, "keys.md", b"# Keys\n\nSpare keys are kept at reception.\n")
    assert IngestionJob.objects.order_by("-id").first().embedding_model == result.active
    assert search(api, collection_id, "spare keys reception")[0]["title"].startswith("keys")

    call_command("cairn_model_switch")
    assert "already the active model" in capsys.readouterr().out


def test_a_document_deleted_during_the_switch_is_left_out_of_the_new_index(api, collection_id, settings, tiny_model):
    from kb.index import index_reader

    ids = [upload(api, collection_id, f"{name}.md", f"# {name}\n\n{text}\n".encode()).json()["id"]
           for name, text in [("boiler", "The boiler is descaled every spring."),
                              ("leave", "Parental leave lasts twenty weeks."),
                              ("fire", "Fire drills happen every March.")]]
    gone = set(Chunk.objects.unrestricted("test").filter(document_id=ids[1]).values_list("id", flat=True))
    settings.CAIRN_EMBEDDING_MODEL = tiny_model
    deleted = []

    def progress(done: int, total: int) -> None:
        if not deleted:  # after the first version is embedded and checkpointed
            deleted.append(api.delete(f"/api/v1/documents/{ids[1]}").status_code)

    result = model_switch(progress=progress, checkpoint_every=1)

    assert deleted == [204] and result.switched and result.chunks == 2
    snapshot = index_reader().snapshot()
    assert snapshot.model_id == result.active and snapshot.size == 2
    assert not any(c in snapshot.lexical for c in gone)
    assert not set(snapshot.dense.search(np.ones(32, np.float32) / np.sqrt(32), 10)[0].tolist()) & gone
    assert search(api, collection_id, "fire drills March")[0]["title"].startswith("fire")
    assert not [r for r in search(api, collection_id, "parental leave") if r["document_id"] == ids[1]]


def test_a_job_embedded_with_the_previous_model_is_re_embedded_by_the_index_writer(
    api, collection_id, settings, tiny_model
):
    from ingestion.indexing import index_pass
    from kb.index import set_active
    from kb.retrieval import embedding
    from kb.retrieval.active_model import ActiveModel

    upload(api, collection_id, "a.md", b"# A\n\nAlpha bravo charlie.\n")
    # The switch flips while a job that was embedded with the old model waits for the writer.
    job = IngestionJob.objects.get()
    IngestionJob.objects.filter(pk=job.pk).update(status=IngestionJob.Status.EMBEDDING, ready_to_index=True)
    set_active(ActiveModel(embedding.model_id(tiny_model), tiny_model))

    index_pass()

    vectors = [np.frombuffer(bytes(v), np.float32) for v in Chunk.objects.unrestricted("test").values_list("embedding", flat=True)]
    assert {len(v) for v in vectors} == {32}
    assert search(api, collection_id, "alpha bravo")[0]["title"].startswith("a")


def test_an_interrupted_switch_resumes_from_its_checkpoint_and_ends_like_a_clean_one(
    api, collection_id, settings, tiny_model, monkeypatch, capsys
):
    from access.services import Actor
    from ingestion import model_switch as switch
    from kb.golden import golden_question_create
    from kb.index import get_embedder
    from kb.models import Collection, DocumentVersion, EvaluationRun

    ids = [upload(api, collection_id, f"{name}.md", f"# {name}\n\n{text}\n".encode()).json()["id"]
           for name, text in [("boiler", "The boiler is descaled every spring."),
                              ("leave", "Parental leave lasts twenty weeks."),
                              ("fire", "Fire drills happen every March.")]]
    collection = Collection.objects.get(pk=collection_id)
    golden_question_create(actor=Actor(user=collection.owner), user=collection.owner, collection=collection,
                           question="When are fire drills?", expected_documents=[ids[2]])
    settings.CAIRN_EMBEDDING_MODEL = tiny_model
    embedded: list[int] = []
    real_embed = switch.embed_version
    monkeypatch.setattr(switch, "embed_version", lambda v, e: (embedded.append(v.pk), real_embed(v, e))[1])

    def killed_after_two(done: int, total: int) -> None:
        if len(embedded) == 2:
            raise KeyboardInterrupt  # the operator's Ctrl-C, or the process dying

    with pytest.raises(KeyboardInterrupt):
        switch.model_switch(progress=killed_after_two, checkpoint_every=1)
    assert active_model().model_id == BUNDLED_MODEL_ID  # nothing flipped; the old model still serves
    assert search(api, collection_id, "boiler descaled")[0]["title"].startswith("boiler")
    first_two = list(embedded)

    embedded.clear()
    call_command("cairn_model_switch")
    out = capsys.readouterr().out

    versions = {v.pk for v in DocumentVersion.objects.unrestricted("test").filter(current_for__isnull=False)}
    assert embedded == sorted(versions - set(first_two))  # only the one the first run never reached
    tiny = get_embedder(tiny_model, settings.CAIRN_EMBED_DEVICE)
    assert active_model().model_id == tiny.model_id and "resumed from an interrupted run" in out
    for version in DocumentVersion.objects.unrestricted("test").filter(pk__in=versions).select_related("document"):
        chunk_ids, expected, _ = real_embed(version, tiny)
        stored = dict(Chunk.objects.unrestricted("test").filter(pk__in=chunk_ids.tolist()).values_list("id", "embedding"))
        got = np.stack([np.frombuffer(bytes(stored[c]), np.float32) for c in chunk_ids.tolist()])
        assert np.allclose(got, expected, atol=1e-6)
    assert search(api, collection_id, "fire drills March")[0]["title"].startswith("fire")
    assert not list(Path(settings.CAIRN_INDEX_DIR).rglob("part-*.npz"))  # the checkpoint is gone after the flip
    # The golden sets were re-run against the new model.
    run = EvaluationRun.objects.get(collection=collection)
    assert run.trigger == EvaluationRun.Trigger.MODEL_SWITCH and run.embedding_model == tiny.model_id
    assert f"golden set of collection {collection_id}" in out


def loaded_from(checkpoint, versions) -> dict:
    """``{version pk: (ids, vectors)}`` of what the checkpoint yields for these versions."""
    return {pk: (ids, vectors) for pk, ids, vectors in checkpoint.entries(versions)}


def test_a_checkpoint_keeps_only_versions_whose_chunks_are_unchanged_and_skips_damaged_parts(tmp_path):
    from types import SimpleNamespace

    from ingestion.model_switch import SwitchCheckpoint

    def version(pk: int, start: int, count: int) -> SimpleNamespace:
        return SimpleNamespace(pk=pk, chunk_id_start=start, chunk_count=count)

    rng = np.random.default_rng(0)
    first, second, third = version(1, 10, 2), version(2, 20, 3), version(3, 30, 1)
    checkpoint = SwitchCheckpoint(tmp_path / "cp", "model-a", 4)
    parts = [{first.pk: (first, np.array([10, 11]), rng.random((2, 4), dtype=np.float32)),
              second.pk: (second, np.array([20, 21, 22]), rng.random((3, 4), dtype=np.float32))},
             {third.pk: (third, np.array([30]), rng.random((1, 4), dtype=np.float32))}]
    for part in parts:
        checkpoint.save(part)

    loaded = loaded_from(checkpoint, {1: first, 2: second, 3: third})
    assert sorted(loaded) == [1, 2, 3]
    assert np.array_equal(loaded[2][1], parts[0][2][2]) and loaded[2][0].tolist() == [20, 21, 22]
    # Version 2 was re-chunked since (another range): it must be embedded again.
    assert sorted(loaded_from(checkpoint, {1: first, 2: version(2, 40, 3), 3: third})) == [1, 3]
    # Another model, or a damaged part file, is never trusted.
    assert loaded_from(SwitchCheckpoint(tmp_path / "cp", "model-b", 4), {1: first}) == {}
    (tmp_path / "cp" / "part-000002.npz").write_bytes(b"not a numpy file")
    assert sorted(loaded_from(checkpoint, {1: first, 2: second, 3: third})) == [1, 2]
    checkpoint.clear()
    assert loaded_from(checkpoint, {1: first}) == {}


def test_a_switch_that_stops_between_its_vectors_and_its_flip_never_mixes_two_models(
    api, collection_id, settings, tiny_model
):
    """The new model's vectors are in the database, the old model still active: a rebuild re-embeds them."""
    from kb.index import get_embedder, index_reader

    upload(api, collection_id, "boiler.md", b"# Boiler\n\nThe boiler is descaled every spring.\n")
    upload(api, collection_id, "leave.md", b"# Leave\n\nParental leave lasts twenty weeks.\n")

    def power_cut() -> None:
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        model_switch(tiny_model, before_flip=power_cut)
    assert active_model().model_id == BUNDLED_MODEL_ID
    tiny_id = get_embedder(tiny_model).model_id
    chunks = Chunk.objects.unrestricted("test")
    assert set(chunks.values_list("embedding_model", flat=True)) == {tiny_id}  # the switch's vectors, recorded

    call_command("cairn_reindex", "--no-eval")

    bundled = get_embedder(None)
    assert set(chunks.values_list("embedding_model", flat=True)) == {BUNDLED_MODEL_ID}
    snapshot = index_reader().snapshot()
    assert snapshot.model_id == BUNDLED_MODEL_ID and snapshot.dense.dim == bundled.dim
    for chunk in chunks.select_related("version__document"):
        stored = np.frombuffer(bytes(chunk.embedding), np.float32)
        assert stored.shape == (bundled.dim,)
    assert search(api, collection_id, "boiler descaled")[0]["title"].startswith("boiler")
