from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from chat.views import admin_login

admin.site.site_header = "Hearth admin"
admin.site.site_title = "Hearth"

urlpatterns = [
    # Before admin.site.urls, so the admin's password form is never reached: its login
    # redirect lands here and is sent on to the one-time-link login.
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
    path("", include("chat.urls")),
    # Browsers ask for /favicon.ico on pages without an icon link (the admin's).
    path("favicon.ico", RedirectView.as_view(url=static("img/hearth.svg"), permanent=True)),
]
