from django.urls import path

from . import views

app_name = "chat"

urlpatterns = [
    path("", views.home, name="home"),
    path("new/", views.thread_new, name="new"),
    path("threads/sidebar/", views.sidebar, name="sidebar"),
    path("threads/<int:thread_id>/", views.thread_detail, name="thread"),
    path("threads/<int:thread_id>/turns/<int:turn>/", views.turn_detail, name="turn"),
    path("messages/<int:message_id>/fork/", views.message_fork, name="fork"),
    path("runs/<int:run_id>/retry/", views.run_retry, name="retry"),
    path("login/", views.login_with_token, name="login"),
    path("login/help/", views.login_help, name="login-help"),
    path("logout/", views.logout_view, name="logout"),
]
