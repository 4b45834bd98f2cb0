"""Template filters that show stored English codes and messages in the reader's language."""

from __future__ import annotations

from django import template

from kb import processing_messages

register = template.Library()


@register.filter
def job_text(value: str | None) -> str:
    """A job's stored error or detail, translated (``{{ job.error|job_text }}``)."""
    return processing_messages.processing_message(value)


@register.filter
def job_status_label(value: str | None) -> str:
    return processing_messages.status_label(value)


@register.filter
def role_label(value: str | None) -> str:
    return processing_messages.role_label(value)


@register.filter
def key_state_label(value: str | None) -> str:
    return processing_messages.key_state_label(value)


@register.filter
def outcome_label(value: str | None) -> str:
    return processing_messages.outcome_label(value)
