from django.urls import path

from access import views

urlpatterns = [
    path("login/", views.CairnLoginView.as_view(), name="login"),
    path("logout/", views.logout_view, name="logout"),
]
