"""Blue-green embedding model switch: the new index is built alongside, search works throughout."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command

from ingestion.embedding import BUNDLED_MODEL_ID
from ingestion.model_switch import active_model, model_switch
from ingestion.models import IngestionJob
from kb.models import Chunk
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
    from kb.selectors import index_reader

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
    assert snapshot.size == Chunk.objects.count() == 3  # the document added mid-switch was caught up
    assert {len(bytes(v)) for v in Chunk.objects.values_list("embedding", flat=True)} == {32 * 4}
    assert search(api, collection_id, "fire drills March")[0]["title"].startswith("fire")

    # After the swap, new documents are embedded with the new model.
    upload(api, collection_id, "keys.md", b"# Keys\n\nSpare keys are kept at reception.\n")
    assert IngestionJob.objects.order_by("-id").first().embedding_model == result.active
    assert search(api, collection_id, "spare keys reception")[0]["title"].startswith("keys")

    call_command("cairn_model_switch")
    assert "already the active model" in capsys.readouterr().out


def test_a_job_embedded_with_the_previous_model_is_re_embedded_by_the_index_writer(
    api, collection_id, settings, tiny_model
):
    from ingestion import embedding
    from ingestion.indexing import index_pass
    from ingestion.model_switch import ActiveModel, set_active

    upload(api, collection_id, "a.md", b"# A\n\nAlpha bravo charlie.\n")
    # The switch flips while a job that was embedded with the old model waits for the writer.
    job = IngestionJob.objects.get()
    IngestionJob.objects.filter(pk=job.pk).update(status=IngestionJob.Status.EMBEDDING, ready_to_index=True)
    set_active(ActiveModel(embedding.model_id(tiny_model), tiny_model))

    index_pass()

    vectors = [np.frombuffer(bytes(v), np.float32) for v in Chunk.objects.values_list("embedding", flat=True)]
    assert {len(v) for v in vectors} == {32}
    assert search(api, collection_id, "alpha bravo")[0]["title"].startswith("a")
