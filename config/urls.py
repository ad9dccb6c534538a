from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Hearth admin"
admin.site.site_title = "Hearth"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("chat.urls")),
]
