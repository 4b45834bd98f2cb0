"""Sign-in and sign-out pages (team mode), each written to the audit log."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from access.models import AuditEvent
from access.services import Actor, actor_from_request, audit_record
from access.sso_views import login_context


class CairnLoginView(LoginView):
    template_name = "access/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**login_context(), **super().get_context_data(**kwargs)}

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.CAIRN_PASSWORD_LOGIN:  # CAIRN_PASSWORD_LOGIN=0: only the identity provider signs in
            return render(request, self.template_name,
                          {**login_context(), "sso_error": _("Password sign-in is switched off here; "
                                           "sign in with your organisation's account.")}, status=403)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        response = super().form_valid(form)
        audit_record(actor=actor_from_request(self.request), action="auth.login", target_type="user",
                     target_id=self.request.user.pk)
        return response

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        username = str(self.request.POST.get("username", ""))[:150]
        audit_record(
            actor=Actor(user=None, ip=self.request.META.get("REMOTE_ADDR"),
                        request_id=getattr(self.request, "request_id", "")),
            action="auth.login_failed", target_type="user", target_id=username,
            outcome=AuditEvent.Outcome.DENIED, rule="bad credentials",
        )
        return super().form_invalid(form)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        audit_record(actor=actor_from_request(request), action="auth.logout", target_type="user",
                     target_id=request.user.pk)
    logout(request)
    return HttpResponseRedirect(reverse("login"))
