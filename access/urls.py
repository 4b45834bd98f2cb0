from django.urls import path

from access import sso_views, views

urlpatterns = [
    path("login/", views.CairnLoginView.as_view(), name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("login/oidc/", sso_views.oidc_start, name="oidc_start"),
    path("login/oidc/callback", sso_views.oidc_callback, name="oidc_callback"),
]
